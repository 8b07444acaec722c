// store.cpp: what every store shares: deliver(), the one mailbox-name encoding, the mailbox
// of an SMTP address and the UIDL of a Maildir base name (RFC 1939 7; RFC 4648 6 base32).
#include "mailnet/store/store.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <mutex>
#include <vector>

namespace mailnet {
namespace {

constexpr std::size_t max_encoded_octets = 200;  // DESIGN.md "On disk": longer names become a hash
constexpr std::size_t max_uidl_octets = 70;      // RFC 1939 7: 1 to 70 characters in 0x21-0x7E
constexpr std::size_t hashed_uidl_chars = 32;    // 160 bits of SHA-256: collisions are not a concern

std::array<unsigned char, 32> sha256(std::string_view data) {
    std::array<unsigned char, 32> md{};
    unsigned int len = 0;
    // NOTE: EVP_Digest only fails on allocation failure inside OpenSSL; the array then stays
    // zero, which is still a fixed, valid (if colliding) value rather than a crash.
    (void)EVP_Digest(data.data(), data.size(), md.data(), &len, EVP_sha256(), nullptr);
    return md;
}

// RFC 4648 6: base32, upper-case alphabet, no padding.
std::string base32(std::span<const unsigned char> bytes) {
    static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    std::string out;
    out.reserve((bytes.size() * 8 + 4) / 5);
    unsigned bits = 0;
    unsigned nbits = 0;
    for (unsigned char b : bytes) {
        bits = (bits << 8) | b;
        nbits += 8;
        while (nbits >= 5) {
            nbits -= 5;
            out += alphabet[(bits >> nbits) & 31u];
        }
        bits &= (1u << nbits) - 1;
    }
    if (nbits > 0) out += alphabet[(bits << (5 - nbits)) & 31u];
    return out;
}

}  // namespace

// ---- events ------------------------------------------------------------------------------

// One listener. Its mutex is held while it runs, so reset() waits for a call in progress;
// recursive, so a listener may end its own subscription from inside its call.
struct subscription::entry {
    std::recursive_mutex mutex;
    bool active = true;  // under mutex
    event_hub::listener call;
};

subscription::subscription(subscription&& other) noexcept
    : hub_(std::move(other.hub_)), entry_(std::move(other.entry_)) {}

subscription& subscription::operator=(subscription&& other) noexcept {
    if (this != &other) {
        reset();
        hub_ = std::move(other.hub_);
        entry_ = std::move(other.entry_);
    }
    return *this;
}

void subscription::reset() noexcept {
    if (!entry_) return;
    if (auto hub = hub_.lock()) hub->remove(entry_.get());
    {
        std::lock_guard lock(entry_->mutex);  // a call in progress ends first
        entry_->active = false;
    }
    entry_.reset();
    hub_.reset();
}

subscription event_hub::subscribe(listener l) {
    subscription s;
    if (!l) return s;
    s.entry_ = std::make_shared<subscription::entry>();
    s.entry_->call = std::move(l);
    s.hub_ = weak_from_this();
    std::lock_guard lock(mutex_);
    listeners_.push_back(s.entry_);
    count_.store(listeners_.size(), std::memory_order_release);
    return s;
}

void event_hub::remove(const subscription::entry* e) noexcept {
    std::lock_guard lock(mutex_);
    std::erase_if(listeners_, [e](const auto& x) { return x.get() == e; });
    count_.store(listeners_.size(), std::memory_order_release);
}

std::string event_hub::key(std::string_view mailbox, std::string_view id) {
    std::string k;
    k.reserve(mailbox.size() + 1 + id.size());
    k.append(mailbox).push_back('\0');  // no mailbox name holds NUL (encode_mailbox_name)
    k.append(id);
    return k;
}

void event_hub::expect(std::string_view mailbox, std::string_view id) {
    std::lock_guard lock(mutex_);
    expected_.insert(key(mailbox, id));
}

bool event_hub::expected(std::string_view mailbox, std::string_view id) const {
    const std::string k = key(mailbox, id);
    std::lock_guard lock(mutex_);
    return expected_.contains(k);
}

void event_hub::withdraw(std::string_view mailbox, std::string_view id) {
    const std::string k = key(mailbox, id);
    std::lock_guard lock(mutex_);
    if (const auto it = expected_.find(k); it != expected_.end()) expected_.erase(it);
    // A deletion waited on this delivery: it never was told, so neither is the deletion
    // (unless another delivery of the same name is still expected).
    if (!expected_.contains(k)) deferred_.erase(k);
}

void event_hub::call_listeners(const store_event& e, const std::vector<std::shared_ptr<subscription::entry>>& now) {
    // Called without the hub's mutex_: a listener may subscribe or unsubscribe meanwhile.
    for (const auto& l : now) {
        std::lock_guard lock(l->mutex);
        if (!l->active) continue;
        try {
            l->call(e);
        } catch (...) {
            // NOTE: the change is made whatever a listener does; the store has nobody to tell.
        }
    }
}

void event_hub::publish(store_event e) {
    std::lock_guard order(publish_mutex_);
    std::vector<std::shared_ptr<subscription::entry>> now;
    bool was_deleted = false;
    {
        std::lock_guard lock(mutex_);
        if (!expected_.empty()) {
            const std::string k = key(e.mailbox, e.id);
            if (e.what == store_event::kind::deleted) {
                if (expected_.contains(k)) {
                    deferred_.insert(k);  // told after its delivery, below
                    return;
                }
            } else if (const auto it = expected_.find(k); it != expected_.end()) {
                expected_.erase(it);
                was_deleted = deferred_.erase(k) > 0;
            }
        }
        if (listeners_.empty()) return;
        now = listeners_;
    }
    e.seq = ++seq_;
    call_listeners(e, now);
    if (was_deleted) {
        store_event d{store_event::kind::deleted, std::move(e.mailbox), std::move(e.id), 0, ++seq_};
        call_listeners(d, now);
    }
}

void store::tell_deleted(std::string_view mailbox, const std::vector<std::string>& ids) const {
    // Also without subscribers: one may subscribe before an expected delivery is published,
    // and must then hear of this deletion after it (publish() returns early otherwise).
    for (const auto& id : ids) events_->publish({store_event::kind::deleted, std::string(mailbox), id, 0, 0});
}

// ---- what every store shares ---------------------------------------------------------------

result<void> store::deliver(std::span<const std::string> mailboxes, std::string_view octets) {
    auto d = begin_delivery(mailboxes);
    if (!d) return unexpected(d.error());
    if (auto w = (*d)->write(octets); !w) {
        (*d)->abort();
        return w;
    }
    return (*d)->commit();
}

std::vector<result<void>> commit_together(std::span<delivery* const> batch) {
    std::vector<result<void>> out(batch.size());
    if (batch.empty() || batch.front()->commit_batch(batch, out)) return out;
    for (std::size_t i = 0; i < batch.size(); ++i) out[i] = batch[i]->commit();
    return out;
}

std::string encode_mailbox_name(std::string_view name) {
    // NOTE: the empty name is no account; it still gets a fixed encoding so this function is
    // total, and the stores refuse it (errc::bad_input) before touching the disk. "%-" cannot
    // come out of escaping (a '%' there is always followed by two hex digits) nor of hashing.
    if (name.empty()) return "%-";
    static constexpr char hex[] = "0123456789ABCDEF";
    std::string out;
    out.reserve(name.size());
    for (std::size_t i = 0; i < name.size(); ++i) {
        const auto c = static_cast<unsigned char>(name[i]);
        // A leading '.' would hide the folder (a Maildir++ subfolder to Dovecot) and is how
        // "." and ".." are reached; '/' and '\' separate paths; the rest is unprintable.
        if (c == '%' || c == '/' || c == '\\' || c < 0x20 || c == 0x7F || (i == 0 && c == '.')) {
            out += '%';
            out += hex[c >> 4];
            out += hex[c & 15u];
        } else {
            out += static_cast<char>(c);
        }
    }
    if (out.size() <= max_encoded_octets) return out;
    // 'H' is not a hex digit, so a hashed name never equals an escaped one.
    const auto md = sha256(name);
    return "%H" + base32(md);
}

std::optional<std::string> decode_mailbox_name(std::string_view directory) {
    if (directory.starts_with("%H")) return std::nullopt;
    std::string out;
    out.reserve(directory.size());
    const auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
    };
    for (std::size_t i = 0; i < directory.size(); ++i) {
        if (directory[i] != '%') {
            out += directory[i];
            continue;
        }
        if (i + 2 >= directory.size()) return std::nullopt;
        const int hi = hex(directory[i + 1]), lo = hex(directory[i + 2]);
        if (hi < 0 || lo < 0) return std::nullopt;
        out += static_cast<char>(hi * 16 + lo);
        i += 2;
    }
    // Only what the encoding makes: "a%41" (an 'A' escaped for no reason) is a foreign name.
    if (out.empty() || encode_mailbox_name(out) != directory) return std::nullopt;
    return out;
}

std::string mailbox_for_address(std::string_view address) {
    std::string out(address);
    for (char& c : out)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    return out;
}

result<std::vector<std::string>> delivery_targets(std::span<const std::string> mailboxes) {
    if (mailboxes.empty()) return unexpected(errc::bad_input);
    std::vector<std::string> targets;
    for (const auto& m : mailboxes) {
        if (m.empty()) return unexpected(errc::bad_input);
        if (std::find(targets.begin(), targets.end(), m) == targets.end()) targets.push_back(m);
    }
    return targets;
}

std::string uidl_for_id(std::string_view base_name) {
    bool usable = !base_name.empty() && base_name.size() <= max_uidl_octets;
    for (char c : base_name) {
        const auto u = static_cast<unsigned char>(c);
        if (u < 0x21 || u > 0x7E) usable = false;
    }
    if (usable) return std::string(base_name);
    const auto md = sha256(base_name);
    return base32(md).substr(0, hashed_uidl_chars);
}

// ---- store_functions ----

result<void> store_functions::lock(std::string_view mailbox) {
    {
        std::lock_guard guard(mutex_);
        if (!locked_.emplace(mailbox).second) return unexpected(errc::mailbox_in_use);
    }
    result<void> r;
    if (on_lock) {
        try {
            r = on_lock(mailbox);
        } catch (...) {
            r = unexpected(errc::temporary_failure);  // a throwing hook is a failure to lock
        }
    }
    if (!r) {
        std::lock_guard guard(mutex_);
        locked_.erase(std::string(mailbox));
    }
    return r;
}

void store_functions::unlock(std::string_view mailbox) noexcept {
    {
        std::lock_guard guard(mutex_);
        if (!locked_.contains(mailbox)) return;  // not ours: never release another session's lock
    }
    // The hook runs while the table still holds the mailbox, so no new lock() can reach
    // on_lock before the old holder's external lock is gone.
    if (on_unlock) {
        try {
            on_unlock(mailbox);
        } catch (...) {
            // NOTE: unlock is noexcept (it runs when a session ends, whatever ended it); a
            // throwing hook cannot be reported further than this.
        }
    }
    std::lock_guard guard(mutex_);
    if (const auto it = locked_.find(mailbox); it != locked_.end()) locked_.erase(it);
}

result<std::vector<message_info>> store_functions::snapshot(std::string_view mailbox) {
    if (!on_snapshot) return std::vector<message_info>{};
    return on_snapshot(mailbox);
}

result<message> store_functions::open(std::string_view mailbox, std::string_view id) {
    if (!on_open) return unexpected(errc::not_found);
    return on_open(mailbox, id);
}

std::vector<std::error_code> store_functions::commit(std::string_view mailbox, std::span<const std::string> deleted,
                                                     std::span<const std::string> seen) {
    std::vector<std::error_code> out;
    out.reserve(deleted.size());
    std::vector<std::string> gone;
    for (const auto& id : deleted) {
        out.push_back(on_delete ? on_delete(mailbox, id) : make_error_code(errc::unsupported));
        if (!out.back()) gone.push_back(id);
    }
    tell_deleted(mailbox, gone);
    if (on_seen) {
        for (const auto& id : seen)
            if (const auto ec = on_seen(mailbox, id))
                log(log_level::warning, "cannot mark " + id + " seen: " + ec.message());
    }
    return out;
}

result<std::vector<std::string>> store_functions::mailboxes() {
    if (!on_mailboxes) return unexpected(errc::unsupported);
    return on_mailboxes();
}

result<std::unique_ptr<delivery>> store_functions::begin_delivery(std::span<const std::string> mailboxes) {
    if (!on_begin_delivery) return unexpected(errc::unsupported);
    return on_begin_delivery(mailboxes);
}

}  // namespace mailnet
