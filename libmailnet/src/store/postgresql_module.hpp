// postgresql_module.hpp: what the PostgreSQL store's module (libmailnet_postgresql.so.0) offers
// libmailnet, which loads it on first use (postgresql_loader.cpp), so that libpq and the
// libraries it brings (Kerberos, LDAP, GnuTLS, SASL: about 3 MiB of mapped pages) are in the
// processes that use a postgresql:// store only. Both sides are built from one tree.
#pragma once

#include <cstddef>
#include <memory>

#include "mailnet/store/postgresql.hpp"

namespace mailnet::detail {

struct postgresql_module {
    int version;                       ///< postgresql_module_version
    const char* build;                 ///< the project version it was built as (MAILNET_MODULE_VERSION)
    std::size_t options_size;          ///< sizeof(postgresql_options) there
    result<std::unique_ptr<store>> (*open)(postgresql_options options);
    bool (*uri_has_password)(const char* uri) noexcept;
};

inline constexpr int postgresql_module_version = 1;

/// The module's own functions (postgresql_store.cpp).
result<std::unique_ptr<store>> open_postgresql_store_here(postgresql_options options);
bool postgresql_uri_has_password_here(const char* uri) noexcept;

}  // namespace mailnet::detail

/// The module's one entry point.
extern "C" const mailnet::detail::postgresql_module* mailnet_postgresql_module_v1() noexcept;
