// copy.cpp: copy_store (mailnet/store/copy.hpp): mailbox by mailbox, under both stores' locks,
// each message streamed from open() into a delivery of its own.
#include "mailnet/store/copy.hpp"

#include <openssl/evp.h>

#include <array>
#include <memory>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace mailnet {
namespace {

// Holds a store's POP3 lock on a mailbox for a scope.
class held_lock {
public:
    held_lock(store& s, std::string_view mailbox) : s_(s), mailbox_(mailbox) {}
    result<void> take() {
        auto r = s_.lock(mailbox_);
        held_ = r.has_value();
        return r;
    }
    ~held_lock() {
        if (held_) s_.unlock(mailbox_);
    }
    held_lock(const held_lock&) = delete;
    held_lock& operator=(const held_lock&) = delete;

private:
    store& s_;
    std::string mailbox_;
    bool held_ = false;
};

using digest = std::array<unsigned char, 32>;  // SHA-256 of a message's stored octets

// The SHA-256 of message `id` of `s` in `box`, read through `buf`.
result<digest> digest_of(store& s, const std::string& box, const std::string& id, std::vector<char>& buf) {
    auto m = s.open(box, id);
    if (!m) return unexpected(m.error());
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
    if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) return unexpected(errc::io_error);
    std::uint64_t octets = 0;
    while (true) {
        auto n = m->read(buf);
        if (!n) return unexpected(n.error());
        if (*n == 0) break;
        if (EVP_DigestUpdate(ctx.get(), buf.data(), *n) != 1) return unexpected(errc::io_error);
        octets += *n;
    }
    if (octets != m->stored_octets()) return unexpected(errc::io_error);  // changed while read
    digest d{};
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(ctx.get(), d.data(), &len) != 1 || len != d.size()) return unexpected(errc::io_error);
    return d;
}

}  // namespace

result<copy_report> copy_store(store& from, store& to, const copy_options& options) {
    copy_report report;
    const auto& log = options.log ? options.log : null_log();
    auto boxes = from.mailboxes();
    if (!boxes) {
        log(log_level::error, "copy: cannot list the mailboxes of the source: " + boxes.error().message());
        return unexpected(boxes.error());
    }
    std::vector<char> buf(64 * 1024), other(64 * 1024);
    for (const auto& box : *boxes) {
        auto fail = [&](std::string_view what, std::error_code e) -> result<copy_report> {
            log(log_level::error, "copy: mailbox " + box + ": " + std::string(what) + ": " + e.message());
            return unexpected(e);
        };
        held_lock source(from, box), target(to, box);
        if (auto r = source.take(); !r) return fail("cannot lock it in the source", r.error());
        if (auto r = target.take(); !r) return fail("cannot lock it in the target", r.error());
        auto messages = from.snapshot(box);
        if (!messages) return fail("cannot list it in the source", messages.error());
        auto present = to.snapshot(box);
        if (!present) return fail("cannot list it in the target", present.error());
        // What is there already: a message of the target with identical octets (SHA-256), each
        // target message answering for one source message only (so a second identical copy is
        // not taken for one there already). Under the same UIDL where the target keeps the
        // source's (then it was copied before); else, and when the target holds other octets
        // under that UIDL (another source copied into the same target), any of the same size:
        // a PostgreSQL target gives an all-digit UIDL (another PostgreSQL store's) a new one,
        // which may equal an unrelated message's UIDL there. A UIDL alone never decides. Each
        // message is read for its digest at most once, and only where a match is possible.
        std::map<std::string, const message_info*, std::less<>> by_uidl;  // target UIDL -> its message
        std::map<std::uint64_t, std::vector<std::string>> by_size;         // target wire size -> ids
        for (const auto& m : *present) {
            by_uidl.emplace(m.pop3_uidl(), &m);
            by_size[m.octets].push_back(m.id);
        }
        std::map<std::string, std::optional<digest>, std::less<>> target_digest;  // nothing: unreadable
        std::map<std::uint64_t, std::multimap<digest, std::string>> hashed;      // by_size's, by digest, unmatched
        std::set<std::string, std::less<>> matched;
        std::error_code broken;  // a target read failed for a reason that may pass (the database away)
        auto digest_of_target = [&](const std::string& id) -> const std::optional<digest>& {
            auto [it, fresh] = target_digest.try_emplace(id);
            if (fresh) {
                auto d = digest_of(to, box, id, other);
                if (d) {
                    it->second = *d;
                } else if (d.error() == make_error_code(errc::temporary_failure) ||
                           d.error() == make_error_code(errc::mailbox_in_use)) {
                    broken = d.error();  // the mailbox stops: taken for no copy, it might be copied twice
                } else {
                    // A broken message (missing, not the size it says): a copy of nothing, so
                    // the source's message is copied.
                    log(log_level::warning, "copy: mailbox " + box + ": cannot read the target's message " + id +
                                                " to compare: " + d.error().message());
                }
            }
            return it->second;
        };
        const std::vector<std::string> targets{box};
        std::size_t copied_here = 0;
        for (const auto& m : *messages) {
            auto d = to.begin_delivery(targets);
            if (!d) return fail("cannot start storing message " + m.id, d.error());
            bool kept = (*d)->keep(m.pop3_uidl(), m.seen);
            std::optional<digest> mine;
            auto source_digest = [&]() -> result<digest> {
                if (!mine) {
                    auto x = digest_of(from, box, m.id, buf);
                    if (!x) return unexpected(x.error());
                    mine = *x;
                }
                return *mine;
            };
            std::optional<std::string> there;
            bool taken = false;
            if (auto it = kept ? by_uidl.find(m.pop3_uidl()) : by_uidl.end(); it != by_uidl.end()) {
                // The UIDL is taken there: by this message, or by other octets (or by a message
                // already answering for another of the source), and then this one needs a new one.
                taken = true;
                const message_info& t = *it->second;
                if (t.octets == m.octets && !matched.contains(t.id)) {
                    auto x = source_digest();
                    if (!x) return fail("cannot read message " + m.id, x.error());
                    if (const auto& td = digest_of_target(t.id); td && *td == *x) there = t.id;
                    if (broken) return fail("cannot read the target's message " + t.id, broken);
                }
            }
            // Not under its UIDL (kept or not; one taken, or no longer there after a copy under
            // a new one): any unmatched message of the same size and digest.
            if (!there) {
                if (auto sized = by_size.find(m.octets); sized != by_size.end()) {
                    auto [h, fresh] = hashed.try_emplace(m.octets);
                    if (fresh)
                        for (const auto& id : sized->second)
                            if (const auto& td = digest_of_target(id); td && !matched.contains(id)) h->second.emplace(*td, id);
                    if (broken) return fail("cannot read the target's messages", broken);
                    auto x = source_digest();
                    if (!x) return fail("cannot read message " + m.id, x.error());
                    if (auto c = h->second.find(*x); c != h->second.end()) there = c->second;
                }
            }
            if (there) {
                d->reset();  // nothing stored
                matched.insert(*there);
                // Out of its size's index too, so k identical messages cost k lookups, not k².
                if (auto h = hashed.find(m.octets); h != hashed.end() && mine)
                    for (auto [c, end] = h->second.equal_range(*mine); c != end; ++c)
                        if (c->second == *there) {
                            h->second.erase(c);
                            break;
                        }
                ++report.already;
                continue;
            }
            if (taken) {
                d->reset();
                d = to.begin_delivery(targets);  // without keep(): a new UIDL (and no seen flag)
                if (!d) return fail("cannot start storing message " + m.id, d.error());
                kept = false;
            }
            auto msg = from.open(box, m.id);
            if (!msg) return fail("cannot read message " + m.id, msg.error());
            std::uint64_t octets = 0;
            while (true) {
                auto n = msg->read(buf);
                if (!n) return fail("cannot read message " + m.id, n.error());
                if (*n == 0) break;
                if (auto w = (*d)->write(std::string_view(buf.data(), *n)); !w) return fail("cannot store message " + m.id, w.error());
                octets += *n;
            }
            if (octets != msg->stored_octets()) return fail("message " + m.id + " changed while read", make_error_code(errc::io_error));
            if (auto c = (*d)->commit(); !c) return fail("cannot store message " + m.id, c.error());
            ++report.copied;
            ++copied_here;
            report.octets += octets;
            if (!kept) ++report.new_uidls;
        }
        ++report.mailboxes;
        log(log_level::info, "copy: mailbox " + box + ": " + std::to_string(copied_here) + " copied, " +
                                 std::to_string(messages->size() - copied_here) + " there already");
    }
    return report;
}

}  // namespace mailnet
