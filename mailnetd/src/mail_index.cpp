// mail_index.cpp: the in-memory index of mailnetd's HTTP API: summaries in received order, the
// DESIGN.md list filters, wait-for-mail waiters checked on insertion (never by polling), ids.
#include "mailnet/mailnetd/mail_index.hpp"

#include "mailnet/mailnetd/api.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdio>
#include <ctime>

namespace mailnet::mailnetd {
namespace {

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

std::int64_t to_us(std::chrono::system_clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
    y -= m <= 2;
    const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
    const auto yoe = static_cast<unsigned>(y - era * 400);
    const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

}  // namespace


bool equals_nocase(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (lower(a[i]) != lower(b[i])) return false;
    return true;
}

// A case-insensitive (ASCII) substring search in time linear in the text (Knuth-Morris-Pratt):
// a filter runs over every summary on the I/O thread, and the naive search's text x filter
// steps (256-octet filters, 100 addresses of 1 KiB a copy) held the whole API up for 36 s.
namespace detail {

class nocase_finder {
public:
    explicit nocase_finder(std::string_view needle) : fail_(needle.size() + 1, 0) {
        needle_.reserve(needle.size());
        for (char c : needle) needle_.push_back(lower(c));
        // fail_[i]: the length of the longest proper border of needle_[0, i).
        for (std::size_t i = 1, k = 0; i < needle_.size(); ++i) {
            while (k > 0 && needle_[i] != needle_[k]) k = fail_[k];
            if (needle_[i] == needle_[k]) ++k;
            fail_[i + 1] = k;
        }
    }
    bool in(std::string_view text) const {
        if (needle_.empty()) return true;
        for (std::size_t i = 0, k = 0; i < text.size(); ++i) {
            const char c = lower(text[i]);
            while (k > 0 && c != needle_[k]) k = fail_[k];
            if (c == needle_[k] && ++k == needle_.size()) return true;
        }
        return false;
    }

private:
    std::string needle_;
    std::vector<std::size_t> fail_;
};

}  // namespace detail

struct compiled_filters {
    std::string subject_text, from_text, to_text;  // what they were made from
    detail::nocase_finder subject, from, to;
    explicit compiled_filters(const message_query& q)
        : subject_text(q.subject), from_text(q.from), to_text(q.to), subject(q.subject), from(q.from), to(q.to) {}
    bool made_from(const message_query& q) const {
        return subject_text == q.subject && from_text == q.from && to_text == q.to;
    }
};

bool contains_nocase(std::string_view haystack, std::string_view needle) {
    return detail::nocase_finder(needle).in(haystack);
}

bool mail_index::matches(const message_query& q, const message_summary& s) {
    if (!q.mailbox.empty() && !equals_nocase(s.mailbox, q.mailbox)) return false;
    if (q.subject.empty() && q.from.empty() && q.to.empty()) return true;
    if (!q.compiled || !q.compiled->made_from(q)) q.compiled = std::make_shared<const compiled_filters>(q);
    const compiled_filters& f = *q.compiled;
    if (!q.subject.empty() && !f.subject.in(s.subject)) return false;
    if (!q.from.empty() && !f.from.in(s.from) && !f.from.in(s.from_header)) return false;
    if (!q.to.empty() && !f.to.in(s.mailbox) &&
        std::none_of(s.to.begin(), s.to.end(), [&](const std::string& a) { return f.to.in(a); }))
        return false;
    return true;
}

bool mail_index::after_since(const message_query& q, const order_key& k) {
    return (!q.after_us || k.received_us > *q.after_us) && (!q.after_seq || k.seq > *q.after_seq);
}

bool mail_index::insert(message_summary s) {
    if (by_id_.contains(s.id)) return false;
    s.json_text.clear();  // never one made for other fields
    s.json_text = summary_json(s);
    const order_key key{to_us(s.received), ++seq_};
    by_id_.emplace(s.id, key);
    ++per_mailbox_[s.mailbox];
    auto [it, fresh] = by_order_.emplace(key, std::move(s));
    const message_summary& e = it->second;
    // Waiters first (their answer includes this message), then the live events.
    std::vector<waiter_id> fired;
    for (auto& [id, w] : waiters_) {
        if (!after_since(w.q, key) || !matches(w.q, e)) continue;
        if (++w.have >= w.count) fired.push_back(id);
    }
    for (const waiter_id id : fired) {
        auto w = waiters_.find(id);
        if (w == waiters_.end()) continue;  // a done() before cancelled it
        auto done = std::move(w->second.done);
        const std::size_t total = w->second.have;
        waiters_.erase(w);
        done(total);
    }
    notify(change{true, &e, e.id});
    return true;
}

void mail_index::notify(const change& c) {
    // Every watcher there at the start, unless one before it unwatched it.
    std::vector<std::uint64_t> watching;
    for (const auto& [id, f] : watchers_) watching.push_back(id);
    for (const auto id : watching)
        if (auto w = watchers_.find(id); w != watchers_.end()) {
            const auto f = w->second;  // kept alive through its own call
            (*f)(c);
        }
}

void mail_index::erase(std::map<order_key, message_summary>::iterator it) {
    const std::string id = it->second.id;
    for (auto& [wid, w] : waiters_)
        if (after_since(w.q, it->first) && matches(w.q, it->second) && w.have > 0) --w.have;
    by_id_.erase(id);
    if (auto n = per_mailbox_.find(it->second.mailbox); n != per_mailbox_.end() && --n->second == 0)
        per_mailbox_.erase(n);
    if (removed_keys_.insert_or_assign(id, it->first).second) {
        removed_order_.push_back(id);
        if (removed_order_.size() > removed_keys_kept) {
            removed_keys_.erase(removed_order_.front());
            removed_order_.pop_front();
        }
    }
    by_order_.erase(it);
    notify(change{false, nullptr, id});
}

bool mail_index::remove(std::string_view id) {
    auto k = by_id_.find(std::string(id));
    if (k == by_id_.end()) return false;
    erase(by_order_.find(k->second));
    return true;
}

bool mail_index::remove(std::string_view mailbox, std::string_view store_id) {
    return remove(make_message_id(mailbox, store_id));
}

const message_summary* mail_index::find(std::string_view id) const {
    auto k = by_id_.find(std::string(id));
    if (k == by_id_.end()) return nullptr;
    return &by_order_.at(k->second);
}

std::optional<order_key> mail_index::key_of(std::string_view id) const {
    const std::string key(id);
    if (auto k = by_id_.find(key); k != by_id_.end()) return k->second;
    if (auto k = removed_keys_.find(key); k != removed_keys_.end()) return k->second;
    return std::nullopt;
}

query_result mail_index::query(const message_query& q) const {
    query_result r;
    for (auto it = by_order_.rbegin(); it != by_order_.rend(); ++it) {
        if (q.after_us && it->first.received_us <= *q.after_us) break;  // received before since=: so is the rest
        if (!after_since(q, it->first) || !matches(q, it->second)) continue;
        ++r.total;
        if (r.messages.size() < q.limit) r.messages.push_back(&it->second);
    }
    return r;
}

const message_summary* mail_index::next_match(const message_query& q, const std::optional<order_key>& before,
                                              order_key& at) const {
    auto it = before ? std::make_reverse_iterator(by_order_.lower_bound(*before)) : by_order_.rbegin();
    for (; it != by_order_.rend(); ++it) {
        if (q.after_us && it->first.received_us <= *q.after_us) break;
        if (!after_since(q, it->first) || !matches(q, it->second)) continue;
        at = it->first;
        return &it->second;
    }
    return nullptr;
}

mail_index::waiter_id mail_index::wait(message_query q, std::size_t count, std::function<void(std::size_t)> done) {
    q.limit = 0;
    const std::size_t have = query(q).total;
    if (have >= count) {
        done(have);
        return 0;
    }
    const waiter_id id = next_waiter_++;
    waiters_.emplace(id, waiter{std::move(q), count, have, std::move(done)});
    return id;
}

void mail_index::cancel(waiter_id id) { waiters_.erase(id); }

std::uint64_t mail_index::watch(std::function<void(const change&)> f) {
    const auto id = next_watcher_++;
    watchers_.emplace(id, std::make_shared<std::function<void(const change&)>>(std::move(f)));
    return id;
}

void mail_index::unwatch(std::uint64_t id) { watchers_.erase(id); }

std::vector<const message_summary*> mail_index::in_mailbox(std::string_view mailbox) const {
    std::vector<const message_summary*> out;
    for (const auto& [k, s] : by_order_)
        if (mailbox.empty() || equals_nocase(s.mailbox, mailbox)) out.push_back(&s);
    return out;
}

std::size_t mail_index::count_in(std::string_view mailbox) const {
    const auto n = per_mailbox_.find(std::string(mailbox));
    return n == per_mailbox_.end() ? 0 : n->second;
}

std::string make_message_id(std::string_view mailbox, std::string_view store_id) {
    std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
    unsigned int len = 0;
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
    EVP_DigestUpdate(ctx, mailbox.data(), mailbox.size());
    EVP_DigestUpdate(ctx, "", 1);  // the NUL between: ("ab","c") and ("a","bc") differ
    EVP_DigestUpdate(ctx, store_id.data(), store_id.size());
    EVP_DigestFinal_ex(ctx, md.data(), &len);
    EVP_MD_CTX_free(ctx);
    // 80 bits in 16 base32 characters: collisions among a test server's messages are not a concern.
    static constexpr char alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
    std::string out;
    std::uint64_t bits = 0;
    int have = 0;
    for (std::size_t i = 0; out.size() < 16; ) {
        if (have < 5) {
            bits = (bits << 8) | md[i++];
            have += 8;
        }
        out += alphabet[(bits >> (have - 5)) & 31u];
        have -= 5;
    }
    return out;
}

std::optional<std::chrono::system_clock::time_point> received_from_store_id(std::string_view id) {
    const auto dot = id.find(".M");
    if (dot == std::string_view::npos || dot == 0) return std::nullopt;
    std::int64_t secs = 0, usecs = 0;
    auto [p, ec] = std::from_chars(id.data(), id.data() + dot, secs);
    if (ec != std::errc{} || p != id.data() + dot || secs < 0) return std::nullopt;
    const char* u = id.data() + dot + 2;
    auto [q, ec2] = std::from_chars(u, id.data() + id.size(), usecs);
    if (ec2 != std::errc{} || q == u || usecs < 0 || usecs > 999999) return std::nullopt;
    return std::chrono::system_clock::time_point(std::chrono::seconds(secs) + std::chrono::microseconds(usecs));
}

std::string format_rfc3339(std::chrono::system_clock::time_point t) {
    const std::int64_t us = to_us(t);
    std::int64_t secs = us / 1000000, frac = us % 1000000;
    if (frac < 0) {
        frac += 1000000;
        --secs;
    }
    const std::time_t tt = static_cast<std::time_t>(secs);
    std::tm tm{};
    ::gmtime_r(&tt, &tm);
    char buf[96];
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ", tm.tm_year + 1900, tm.tm_mon + 1,
                  tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<long long>(frac));
    return buf;
}

std::optional<std::chrono::system_clock::time_point> parse_rfc3339(std::string_view s) {
    // date-time = full-date "T" partial-time time-offset (RFC 3339 5.6); 'T' and 'Z' any case.
    // Also what shell scripts get from date(1): a space for the T (`date --rfc-3339=ns`, as RFC
    // 3339 5.6's note allows) and a comma before the fraction (`date -Ins`, ISO 8601).
    const auto digits = [&](std::size_t at, std::size_t n) -> std::optional<int> {
        if (at + n > s.size()) return std::nullopt;
        int v = 0;
        for (std::size_t i = at; i < at + n; ++i) {
            if (s[i] < '0' || s[i] > '9') return std::nullopt;
            v = v * 10 + (s[i] - '0');
        }
        return v;
    };
    if (s.size() < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || s[13] != ':' || s[16] != ':')
        return std::nullopt;
    auto y = digits(0, 4), mo = digits(5, 2), d = digits(8, 2), h = digits(11, 2), mi = digits(14, 2), se = digits(17, 2);
    if (!y || !mo || !d || !h || !mi || !se) return std::nullopt;
    if (*mo < 1 || *mo > 12 || *d < 1 || *h > 23 || *mi > 59 || *se > 60) return std::nullopt;
    // The days of that month (RFC 3339 5.7): 2023-02-31 is no date.
    static constexpr int month_days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    const bool leap = (*y % 4 == 0 && *y % 100 != 0) || *y % 400 == 0;
    if (*d > month_days[*mo - 1] + (*mo == 2 && leap ? 1 : 0)) return std::nullopt;
    std::size_t at = 19;
    std::int64_t us = 0;
    if (at < s.size() && (s[at] == '.' || s[at] == ',')) {
        ++at;
        const std::size_t start = at;
        int scale = 100000;
        while (at < s.size() && s[at] >= '0' && s[at] <= '9') {
            us += (s[at] - '0') * scale;
            scale /= 10;
            ++at;
        }
        if (at == start) return std::nullopt;
    }
    std::int64_t offset_s = 0;
    if (at < s.size() && (s[at] == 'Z' || s[at] == 'z')) {
        ++at;
    } else if (at < s.size() && (s[at] == '+' || s[at] == '-')) {
        auto oh = digits(at + 1, 2), om = digits(at + 4, 2);
        if (!oh || !om || at + 3 >= s.size() || s[at + 3] != ':' || *oh > 23 || *om > 59) return std::nullopt;
        offset_s = (*oh * 3600 + *om * 60) * (s[at] == '+' ? 1 : -1);
        at += 6;
    } else {
        return std::nullopt;
    }
    if (at != s.size()) return std::nullopt;
    const std::int64_t secs = days_from_civil(*y, static_cast<unsigned>(*mo), static_cast<unsigned>(*d)) * 86400 +
                              *h * 3600 + *mi * 60 + std::min(*se, 59) - offset_s;
    // The clock holds about 1678 to 2261 (nanoseconds in 64 bits): a time outside is taken as
    // its nearest end (since= the year 9999 counts nothing, since= the year 1000 everything)
    // instead of overflowing.
    using tp = std::chrono::system_clock::time_point;
    const std::int64_t lo = std::chrono::duration_cast<std::chrono::seconds>(tp::min().time_since_epoch()).count() + 1;
    const std::int64_t hi = std::chrono::duration_cast<std::chrono::seconds>(tp::max().time_since_epoch()).count() - 1;
    if (secs < lo) return tp(std::chrono::seconds(lo));
    if (secs > hi) return tp(std::chrono::seconds(hi));
    return tp(std::chrono::seconds(secs) + std::chrono::microseconds(us));
}

}  // namespace mailnet::mailnetd
