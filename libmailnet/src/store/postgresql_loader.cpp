// postgresql_loader.cpp: open_postgresql_store() of libmailnet, which loads the PostgreSQL store's
// module (libmailnet_postgresql.so.0, postgresql_module.hpp) on first use: from the directory
// libmailnet itself was loaded from (the build tree, or the installed libdir), else by the
// dynamic linker's search. A build without shared libraries has the store compiled in.
#include "mailnet/net/program.hpp"
#include "mailnet/store/postgresql.hpp"
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
        std::string here;
        Dl_info info{};
        if (::dladdr(reinterpret_cast<void*>(&load), &info) != 0 && info.dli_fname != nullptr)
            here = (std::filesystem::path(info.dli_fname).parent_path() / module_file).string();
        void* h = nullptr;
        if (!here.empty()) h = ::dlopen(here.c_str(), RTLD_NOW | RTLD_LOCAL);
        if (h == nullptr) h = ::dlopen(module_file, RTLD_NOW | RTLD_LOCAL);
        if (h == nullptr) {
            const char* e = ::dlerror();
            l.error = e ? e : module_file;
            return;
        }
        using entry = const detail::postgresql_module* (*)() noexcept;
        auto* f = reinterpret_cast<entry>(::dlsym(h, "mailnet_postgresql_module_v1"));
        const auto* m = f ? f() : nullptr;
        if (m == nullptr || m->version != detail::postgresql_module_version) {
            l.error = std::string(module_file) + " is not this libmailnet's module";
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
    const auto& l = load();
    if (l.module == nullptr) return false;  // the store cannot be opened anyway
    try {
        const std::string text(uri);
        return l.module->uri_has_password(text.c_str());
    } catch (...) {
        return false;
    }
}

}  // namespace net
}  // namespace mailnet
