// version.cpp: the version string, from the build (CMake's project version).
#include "mailnet/version.hpp"

namespace mailnet {

std::string_view version() noexcept { return MAILNET_VERSION; }

}  // namespace mailnet
