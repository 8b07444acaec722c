// memory_store.cpp: the store in memory (embedding, tests), with the Maildir store's semantics:
// one lock per mailbox, delivery order, seen flags, deletions only at commit (RFC 1939 6).
#include "mailnet/store/store.hpp"

#include "mailnet/dot_stuffing.hpp"

#include <algorithm>
#include <map>
#include <mutex>
#include <set>
#include <utility>

namespace mailnet {
namespace {

struct stored_message {
    std::string id;
    std::shared_ptr<const std::string> bytes;
    std::uint64_t wire = 0;
    bool seen = false;
};

struct mailbox_state {
    std::vector<stored_message> messages;  // delivery order
};

// Shared with deliveries, so a delivery that outlives the store object stays valid.
struct memory_state {
    std::mutex mutex;
    std::map<std::string, mailbox_state, std::less<>> mailboxes;  // made by delivery only
    // Locks apart from the mailboxes: lock() never creates a mailbox (DESIGN.md), so logins
    // to empty accounts leave nothing behind once unlocked.
    std::set<std::string, std::less<>> locked;
    std::uint64_t next_id = 1;
};

class memory_delivery final : public delivery {
public:
    memory_delivery(std::shared_ptr<memory_state> state, std::vector<std::string> targets,
                    std::shared_ptr<event_hub> events)
        : state_(std::move(state)), targets_(std::move(targets)), events_(std::move(events)) {}

    result<void> write(std::string_view octets) override {
        if (done_) return unexpected(errc::bad_input);
        buffer_.append(octets);
        return {};
    }

    result<void> commit() override {
        if (done_) return unexpected(errc::bad_input);
        done_ = true;
        auto bytes = std::make_shared<const std::string>(std::move(buffer_));
        const std::uint64_t wire = wire_octets(*bytes);
        std::string id;
        {
            std::lock_guard lock(state_->mutex);
            // One id for every target: the same message, as a hard link shares a Maildir name.
            id = "m" + std::to_string(state_->next_id++);
            for (const auto& t : targets_) {
                events_->expect(t, id);  // a deletion before the publish below waits for it
                state_->mailboxes[t].messages.push_back({id, bytes, wire, false});
            }
        }
        // Outside the lock: a listener may read the store.
        for (const auto& t : targets_) events_->publish({store_event::kind::delivered, t, id, wire, 0});
        return {};
    }

    void abort() noexcept override {
        done_ = true;
        buffer_.clear();
    }

private:
    std::shared_ptr<memory_state> state_;
    std::vector<std::string> targets_;
    std::shared_ptr<event_hub> events_;
    std::string buffer_;
    bool done_ = false;
};

class memory_store final : public store {
public:
    result<void> lock(std::string_view mailbox) override {
        if (mailbox.empty()) return unexpected(errc::bad_input);
        std::lock_guard lock(state_->mutex);
        if (!state_->locked.emplace(mailbox).second) return unexpected(errc::mailbox_in_use);
        return {};
    }

    void unlock(std::string_view mailbox) noexcept override {
        std::lock_guard lock(state_->mutex);
        if (auto it = state_->locked.find(mailbox); it != state_->locked.end()) state_->locked.erase(it);
    }

    result<std::vector<message_info>> snapshot(std::string_view mailbox) override {
        if (mailbox.empty()) return unexpected(errc::bad_input);
        std::vector<message_info> out;
        std::lock_guard lock(state_->mutex);
        auto it = state_->mailboxes.find(mailbox);
        if (it == state_->mailboxes.end()) return out;
        out.reserve(it->second.messages.size());
        for (const auto& m : it->second.messages) out.push_back({m.id, m.wire, uidl_for_id(m.id), m.seen});
        return out;
    }

    result<message> open(std::string_view mailbox, std::string_view id) override {
        if (mailbox.empty()) return unexpected(errc::bad_input);
        std::lock_guard lock(state_->mutex);
        auto* m = find(mailbox, id);
        if (!m) return unexpected(errc::not_found);
        return message(string_source(m->bytes), m->bytes->size());
    }

    std::vector<std::error_code> commit(std::string_view mailbox, std::span<const std::string> deleted,
                                        std::span<const std::string> seen) override {
        std::vector<std::error_code> out(deleted.size());
        if (mailbox.empty()) {
            std::fill(out.begin(), out.end(), make_error_code(errc::bad_input));
            return out;
        }
        std::vector<std::string> gone;  // told to the subscribers: what this commit removed
        {
            std::lock_guard lock(state_->mutex);
            auto it = state_->mailboxes.find(mailbox);
            if (it == state_->mailboxes.end()) return out;  // nothing there: every deletion is already true
            auto& messages = it->second.messages;
            for (const auto& id : seen)
                if (auto* m = find(mailbox, id)) m->seen = true;
            // NOTE: an id that is already gone counts as deleted, as in the Maildir store.
            const std::set<std::string_view> doomed(deleted.begin(), deleted.end());
            std::erase_if(messages, [&](const stored_message& m) {
                if (!doomed.contains(m.id)) return false;
                gone.push_back(m.id);
                return true;
            });
            if (messages.empty()) state_->mailboxes.erase(it);  // as if never delivered to: nothing grows
        }
        tell_deleted(mailbox, gone);
        return out;
    }

    result<std::unique_ptr<delivery>> begin_delivery(std::span<const std::string> mailboxes) override {
        auto targets = delivery_targets(mailboxes);
        if (!targets) return unexpected(targets.error());
        return std::unique_ptr<delivery>(std::make_unique<memory_delivery>(state_, std::move(*targets), events()));
    }

    result<std::vector<std::string>> mailboxes() override {
        std::vector<std::string> out;
        std::lock_guard lock(state_->mutex);
        for (const auto& [name, box] : state_->mailboxes) out.push_back(name);
        return out;  // std::map: sorted
    }

private:
    // Caller holds the mutex.
    stored_message* find(std::string_view mailbox, std::string_view id) {
        auto it = state_->mailboxes.find(mailbox);
        if (it == state_->mailboxes.end()) return nullptr;
        for (auto& m : it->second.messages)
            if (m.id == id) return &m;
        return nullptr;
    }

    std::shared_ptr<memory_state> state_ = std::make_shared<memory_state>();
};

}  // namespace

std::unique_ptr<store> make_memory_store() { return std::make_unique<memory_store>(); }

}  // namespace mailnet
