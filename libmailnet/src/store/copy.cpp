// copy.cpp: copy_store (mailnet/store/copy.hpp): mailbox by mailbox, under both stores' locks,
// each message streamed from open() into a delivery of its own.
#include "mailnet/store/copy.hpp"

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

}  // namespace

result<copy_report> copy_store(store& from, store& to, const copy_options& options) {
    copy_report report;
    const auto& log = options.log ? options.log : null_log();
    auto boxes = from.mailboxes();
    if (!boxes) {
        log(log_level::error, "copy: cannot list the mailboxes of the source: " + boxes.error().message());
        return unexpected(boxes.error());
    }
    std::vector<char> buf(64 * 1024);
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
        std::set<std::string, std::less<>> have;
        for (const auto& m : *present) have.insert(m.pop3_uidl());
        const std::vector<std::string> targets{box};
        std::size_t copied_here = 0;
        for (const auto& m : *messages) {
            if (have.contains(m.pop3_uidl())) {
                ++report.already;
                continue;
            }
            auto msg = from.open(box, m.id);
            if (!msg) return fail("cannot read message " + m.id, msg.error());
            auto d = to.begin_delivery(targets);
            if (!d) return fail("cannot start storing message " + m.id, d.error());
            const bool kept = (*d)->keep(m.pop3_uidl(), m.seen);
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
