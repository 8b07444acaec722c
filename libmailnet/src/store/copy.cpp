// copy.cpp: copy_store (mailnet/store/copy.hpp): mailbox by mailbox, under both stores' locks,
// each message streamed from open() into a delivery of its own.
#include "mailnet/store/copy.hpp"

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>
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

// Whether message `a` of `from` and message `b` of `to`, both in `box`, hold the same octets.
result<bool> same_octets(store& from, store& to, const std::string& box, const std::string& a, const std::string& b,
                         std::vector<char>& buf, std::vector<char>& other) {
    auto x = from.open(box, a);
    if (!x) return unexpected(x.error());
    auto y = to.open(box, b);
    if (!y) return unexpected(y.error());
    if (x->stored_octets() != y->stored_octets()) return false;
    std::size_t have = 0;  // octets of y read ahead in `other`, not yet compared
    std::size_t at = 0;
    while (true) {
        auto n = x->read(buf);
        if (!n) return unexpected(n.error());
        if (*n == 0) break;
        for (std::size_t done = 0; done < *n;) {
            if (at == have) {
                auto k = y->read(other);
                if (!k) return unexpected(k.error());
                if (*k == 0) return false;
                have = *k;
                at = 0;
            }
            const std::size_t len = std::min(*n - done, have - at);
            if (std::memcmp(buf.data() + done, other.data() + at, len) != 0) return false;
            done += len;
            at += len;
        }
    }
    if (at < have) return false;
    auto k = y->read(other);
    if (!k) return unexpected(k.error());
    return *k == 0;
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
        // What is there already: a message of the target with identical octets, each target
        // message answering for one source message only (so a second identical copy is not
        // taken for one there already). Under the same UIDL where the target keeps the
        // source's (then it was copied before); else, and when the target holds other octets
        // under that UIDL (another source copied into the same target), any of the same size:
        // a PostgreSQL target gives an all-digit UIDL (another PostgreSQL store's) a new one,
        // which may equal an unrelated message's UIDL there. A UIDL alone never decides.
        std::map<std::string, std::string, std::less<>> by_uidl;  // target UIDL -> target id
        std::multimap<std::uint64_t, std::string> unmatched;     // target wire size -> target id
        for (const auto& m : *present) {
            by_uidl.emplace(m.pop3_uidl(), m.id);
            unmatched.emplace(m.octets, m.id);
        }
        const std::vector<std::string> targets{box};
        std::size_t copied_here = 0;
        for (const auto& m : *messages) {
            auto d = to.begin_delivery(targets);
            if (!d) return fail("cannot start storing message " + m.id, d.error());
            bool kept = (*d)->keep(m.pop3_uidl(), m.seen);
            // Whether target message `id`, not yet matched, holds m's octets; matched if so.
            auto matches = [&](const std::string& id) -> result<bool> {
                auto [it, end] = unmatched.equal_range(m.octets);
                while (it != end && it->second != id) ++it;
                if (it == end) return false;
                auto same = same_octets(from, to, box, m.id, id, buf, other);
                if (same && *same) unmatched.erase(it);
                return same;
            };
            bool there = false, taken = false;
            if (auto it = kept ? by_uidl.find(m.pop3_uidl()) : by_uidl.end(); it != by_uidl.end()) {
                auto same = matches(it->second);
                if (!same) return fail("cannot compare message " + m.id + " with the target's " + it->second, same.error());
                there = *same;
                taken = !there;  // the UIDL holds other octets there: this message needs a new one
            }
            if (!there && (!kept || taken)) {
                std::vector<std::string> sized;
                for (auto [it, end] = unmatched.equal_range(m.octets); it != end; ++it) sized.push_back(it->second);
                for (const auto& id : sized) {
                    auto same = matches(id);
                    if (!same) return fail("cannot compare message " + m.id + " with the target's " + id, same.error());
                    if ((there = *same)) break;
                }
            }
            if (there) {
                d->reset();  // nothing stored
                ++report.already;
                continue;
            }
            if (taken) {
                d->reset();
                d = to.begin_delivery(targets);  // without keep(): a new UIDL
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
