// postgresql_loader.cpp: open_postgresql_store() of libmailnet, which loads the PostgreSQL store's
// module (libmailnet_postgresql.so.0, postgresql_module.hpp) on first use: from the directory
// libmailnet itself was loaded from (the build tree, or the installed libdir), else by the
// dynamic linker's search. A build without shared libraries has the store compiled in.
#include "mailnet/net/program.hpp"
#include "mailnet/store/postgresql.hpp"
#include "mailnet/version.hpp"
#include "postgresql_module.hpp"

#include <dlfcn.h>

#include <filesystem>
#include <mutex>
#include <string>

namespace mailnet {
namespace {

constexpr const char* module_file = "libmailnet_postgresql.so.0";

struct loaded {
    const detail::postgresql_module* module = nullptr;
    std::string error;  // why it is not there
};

const loaded& load() {
    static loaded l;
    static std::once_flag once;
    std::call_once(once, [] {
#ifdef MAILNET_POSTGRESQL_BUILTIN
        l.module = mailnet_postgresql_module_v1();
#else
        // NOTE: the one beside libmailnet when it is there (its own load error is the one
        // told: libpq missing, a symbol not found); the dynamic linker's search only when it
        // is not, and a module found so must be of this very build.
        std::string here;
        Dl_info info{};
        if (::dladdr(reinterpret_cast<void*>(&load), &info) != 0 && info.dli_fname != nullptr)
            here = (std::filesystem::path(info.dli_fname).parent_path() / module_file).string();
        std::error_code ec;
        const bool beside = !here.empty() && std::filesystem::exists(here, ec);
        void* h = ::dlopen(beside ? here.c_str() : module_file, RTLD_NOW | RTLD_LOCAL);
        if (h == nullptr) {
            const char* e = ::dlerror();
            l.error = e ? e : module_file;
            return;
        }
        using entry = const detail::postgresql_module* (*)() noexcept;
        auto* f = reinterpret_cast<entry>(::dlsym(h, "mailnet_postgresql_module_v1"));
        const auto* m = f ? f() : nullptr;
        if (m == nullptr || m->version != detail::postgresql_module_version || m->build == nullptr ||
            version() != m->build || m->options_size != sizeof(postgresql_options)) {
            l.error = std::string(module_file) + " is not of this libmailnet (" + std::string(version()) + ")";
            return;  // NOTE: left loaded: unloading code that may have registered anything is not safe
        }
        l.module = m;
#endif
    });
    return l;
}

}  // namespace

bool is_postgresql_uri(std::string_view s) noexcept {
    return s.starts_with("postgresql://") || s.starts_with("postgres://");
}

result<std::unique_ptr<store>> open_postgresql_store(postgresql_options options) {
    const auto& l = load();
    if (l.module == nullptr) {
        if (options.log) options.log(log_level::error, "postgresql: the PostgreSQL store cannot be loaded: " + l.error);
        return unexpected(errc::unsupported);
    }
    return l.module->open(std::move(options));
}

std::string postgresql_unavailable_reason() {
    const auto& l = load();
    return l.module ? std::string() : l.error;
}

namespace net {

bool uri_has_password(std::string_view uri) noexcept {
    // NOTE: fails closed: without libpq's parser (no module, no memory) a URI may hold one.
    try {
        const auto& l = load();
        if (l.module == nullptr) return true;
        const std::string text(uri);
        return l.module->uri_has_password(text.c_str());
    } catch (...) {
        return true;
    }
}

}  // namespace net
}  // namespace mailnet
