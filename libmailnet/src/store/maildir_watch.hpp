// maildir_watch.hpp (internal): tells a Maildir store's subscribers which mailboxes changed on
// disk, whoever changed them (this process, another pop3d, a file copied in by hand), through
// inotify. Only for listeners that keep state (mailnetd's index): they compare the mailbox
// with what they hold, so the store's own changes, already told as delivered/deleted, cost
// one comparison at most.
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "mailnet/log.hpp"
#include "mailnet/posix_io.hpp"
#include "mailnet/store/store.hpp"

namespace mailnet::detail {

class maildir_watch {
public:
    /// The mailbox a directory entry of the root holds (nullopt: none of the store's names).
    using name_of_entry = std::function<std::optional<std::string>(int root_fd, const std::string& entry)>;

    /// Starts watching `root` and every mailbox's new/ and cur/ in it, and a thread that
    /// publishes, at most every `pause`, a `changed` naming each mailbox whose files changed
    /// (every mailbox, watched again, when the kernel's queue overflowed).
    /// Nothing is watched when inotify cannot be had (a warning is logged).
    maildir_watch(std::filesystem::path root, name_of_entry name_of, std::shared_ptr<event_hub> hub, log_sink log,
                  std::chrono::milliseconds pause = std::chrono::milliseconds(200));
    ~maildir_watch();
    maildir_watch(const maildir_watch&) = delete;
    maildir_watch& operator=(const maildir_watch&) = delete;

private:
    struct state;
    void run();
    std::unique_ptr<state> s_;
    std::thread thread_;
};

}  // namespace mailnet::detail
