// throttle.cpp: failed logins per peer address, forgotten a window after the last (DESIGN.md "Limits").
#include "mailnet/auth/throttle.hpp"

#include <algorithm>
#include <vector>

namespace mailnet {

login_throttle::login_throttle(std::chrono::seconds window, std::size_t max_peers)
    : window_(window), max_peers_(std::max<std::size_t>(max_peers, 1)) {}

void login_throttle::prune(clock::time_point now) {
    std::erase_if(table_, [&](const auto& e) { return now - e.second.last > window_; });
    if (table_.size() < max_peers_) return;
    // Still full (a flood from many keys): drop the half whose last failure is oldest at once,
    // so each new key costs O(1) amortised, not a scan of the table; a key failing all the
    // time (the account under attack) is never among them.
    std::vector<clock::time_point> last;
    last.reserve(table_.size());
    for (const auto& [peer, e] : table_) last.push_back(e.last);
    auto mid = last.begin() + static_cast<std::ptrdiff_t>(last.size() / 2);
    std::nth_element(last.begin(), mid, last.end());
    const auto cut = *mid;
    std::erase_if(table_, [&](const auto& e) { return e.second.last < cut; });
    while (table_.size() >= max_peers_) table_.erase(table_.begin());  // all equally old
}

std::chrono::milliseconds login_throttle::failed(std::string_view peer, clock::time_point now,
                                                 std::chrono::milliseconds step, std::chrono::milliseconds cap) {
    std::lock_guard lock(mutex_);
    auto it = table_.find(peer);
    if (it == table_.end()) {
        if (table_.size() >= max_peers_) prune(now);
        it = table_.emplace(std::string(peer), entry{0, now}).first;
    }
    auto& e = it->second;
    if (now - e.last > window_) e = entry{0, now};
    e.last = now;
    const auto earlier = e.count++;
    return std::min<std::chrono::milliseconds>(step * static_cast<long>(std::min<std::size_t>(earlier, 1000)), cap);
}

std::size_t login_throttle::failures(std::string_view peer, clock::time_point now) const {
    std::lock_guard lock(mutex_);
    const auto it = table_.find(peer);
    if (it == table_.end() || now - it->second.last > window_) return 0;
    return it->second.count;
}

std::size_t login_throttle::peers() const {
    std::lock_guard lock(mutex_);
    return table_.size();
}

}  // namespace mailnet
