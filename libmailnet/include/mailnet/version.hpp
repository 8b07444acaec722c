// mailnet/version.hpp: the toolkit's version, as every program's --version prints it.
#pragma once

#include <string_view>

namespace mailnet {

/// The version of libmailnet, e.g. "0.1.0".
std::string_view version() noexcept;

}  // namespace mailnet
