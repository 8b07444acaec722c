// runner.cpp: the connection runner (DESIGN.md "Layers" 3, "Limits"): bounded write buffer,
// read-ahead while long output is written, messages streamed from the store on the blocking
// pool (RFC 1939 3 dot-stuffing), failed-login delays, STLS/STARTTLS (RFC 2595 4, RFC 3207 4).
#include "mailnet/net/runner.hpp"

#include "mailnet/address.hpp"

#include <openssl/ssl.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/error.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>
#include <functional>
#include <optional>
#include <variant>
#include <vector>

#include "mailnet/dot_stuffing.hpp"
#include "mailnet/store/store.hpp"

namespace mailnet::net {
namespace {

constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

// One blocking-pool hop per this much; under glibc's mmap threshold, so the buffer comes
// from the heap (no mmap/munmap and page faults per RETR), uninitialised.
constexpr std::size_t read_chunk_octets = 120 * 1024;
constexpr std::size_t big_read_chunk_octets = 512 * 1024;  // for messages larger than the above
constexpr std::size_t flush_octets = 256 * 1024;        // write when this much is pending
constexpr std::size_t max_queued = 256;                 // queued replies and messages, at most
constexpr std::size_t idle_buffer_octets = 16 * 1024;   // keep no more than this while idle
constexpr std::chrono::seconds notice_timeout{2};       // a shutdown notice and the close that follows, at most

// Octets waiting to be written. Unlike std::string, it grows without zero-filling what the
// encoder is about to overwrite (a measurable share of a 1 MiB RETR).
class wire_buffer {
public:
    char* room(std::size_t n) {
        if (capacity_ - size_ < n) grow(size_ + n);
        return data_.get() + size_;
    }
    void commit(std::size_t n) noexcept { size_ += n; }
    void append(std::string_view s) {
        std::memcpy(room(s.size()), s.data(), s.size());
        size_ += s.size();
    }
    const char* data() const noexcept { return data_.get(); }
    std::size_t size() const noexcept { return size_; }
    bool empty() const noexcept { return size_ == 0; }
    void clear() noexcept { size_ = 0; }
    // Frees the storage if it is larger than `keep` and empty (idle sessions stay small).
    void shrink(std::size_t keep) noexcept {
        if (size_ == 0 && capacity_ > keep) {
            data_.reset();
            capacity_ = 0;
        }
    }

private:
    void grow(std::size_t need) {
        const std::size_t cap = std::max({need, 2 * capacity_, std::size_t{256}});
        auto bigger = std::make_unique_for_overwrite<char[]>(cap);
        if (size_ > 0) std::memcpy(bigger.get(), data_.get(), size_);
        data_ = std::move(bigger);
        capacity_ = cap;
    }
    std::unique_ptr<char[]> data_;
    std::size_t size_ = 0, capacity_ = 0;
};

// The one read a connection may have in flight, started in the background while output is
// written or a delay runs, so neither ever waits on the peer's input (a partial TLS record,
// or one without application data, completes no read). Shared with the reading coroutine.
struct read_state {
    explicit read_state(const asio::any_io_executor& ex) : event(ex) {}
    asio::steady_timer event;  // cancelled when the read completes: the "done" signal
    std::array<char, 4096> buf{};
    std::size_t n = 0;
    std::error_code ec;
    bool active = false;  // a read is in flight
    bool done = false;    // it completed and its result was not consumed yet
};

asio::awaitable<void> read_in_background(std::shared_ptr<read_state> st, connection& c, stream::on_expiry then) {
    st->n = co_await c.read_some_until(asio::buffer(st->buf), st->ec, c.io().deadline(), then);
    st->active = false;
    st->done = true;
    st->event.cancel();
}

// The account throttle's key: a fixed-size digest of the name as typed, case folded, so a
// guesser's 9 KiB names cost the table no more than short ones.
std::string account_key(std::string_view user) {
    // Every spelling of one address is one account ("bob"@x is bob@x: canonical_address).
    std::string folded = canonical_address(user);
    for (auto& ch : folded) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    return std::to_string(std::hash<std::string>{}(folded));
}

// Encodes stored octets into `to`, 64 KiB at a time (bounded growth of the buffer).
void encode(dot_encoder& enc, std::string_view chunk, wire_buffer& to) {
    constexpr std::size_t slice = 64 * 1024;
    while (!chunk.empty() && !enc.done()) {
        const auto piece = chunk.substr(0, slice);
        const auto [used, written] = enc.encode_to(piece, to.room(dot_encoder::max_encoded(piece.size())));
        to.commit(written);
        chunk.remove_prefix(used);
    }
}

}  // namespace

struct runner::impl {
    impl(connection& conn, core_port& port, runner_options opts)
        : c(conn), core(port), o(std::move(opts)), rd(std::make_shared<read_state>(conn.io().get_executor())) {}

    connection& c;
    core_port& core;
    runner_options o;
    wire_buffer out;
    wire_buffer spare;  // the next segment, made on the pool while `out` is written
    std::vector<std::variant<std::string, act::stream_message>> queue;  // not yet written, in order
    std::size_t queued_text = 0;   // octets of the strings in `queue`
    std::size_t queued_messages = 0;
    std::string mailbox;
    std::shared_ptr<read_state> rd;
    bool eof = false;              // the peer closed its side (or the read failed)
    bool logged_in = false;
    bool failed = false;           // see broke()
    bool timed_out = false;        // a limit passed during pause() (timed_out_in_pause)
    std::size_t answered = 0;      // streamed() calls so far
    stream::clock::time_point started = stream::clock::now();
    std::optional<stream::clock::time_point> line_started;  // the partial command line buffered arrived from then
    std::uint64_t fed = 0;         // octets fed to the core so far
    std::uint64_t line_offset = 0;  // where (in `fed`) that partial line starts
    std::optional<stream::clock::time_point> transfer_started;  // the transfer under way was first waited on then
    std::uint64_t transfer_fed = 0;  // `fed` then (its octets are counted from there)
    std::uint64_t transfer = 0;      // which transfer that is (core_port::transfer())

    // ---- output ----------------------------------------------------------------------

    asio::awaitable<bool> flush() {
        if (out.empty()) co_return c.io().is_open();
        const auto ec = co_await c.write(asio::buffer(out.data(), out.size()));
        out.clear();
        co_return !ec;
    }

    // Turns the queue (replies, messages) into wire octets, one segment of about flush_octets
    // at a time, on the blocking pool: it opens, reads and dot-stuffs messages. The I/O thread
    // writes one segment while the pool makes the next, so disk, encoding and network overlap,
    // and a batch of small messages costs one pool hop per segment, not one per message.
    // NOTE: the core is not touched on the pool (it is not thread-safe): finished messages are
    // collected in `finished` and answered on the I/O thread after the hop.
    struct producer {
        std::size_t next = 0;                           // the next queue item to start
        const act::stream_message* current = nullptr;   // the message being streamed
        std::optional<message> msg;
        std::optional<dot_encoder> enc;
        std::uint64_t stored = 0, read = 0;             // its stored octets, and how many were read
        std::unique_ptr<char[]> buf;                    // read buffer, sized for the message
        std::size_t buf_size = 0;
        std::vector<std::error_code> finished;          // messages completed since the last hop, in order
        bool broken = false;                            // failed after its ok line: close the connection

        bool done(std::size_t items) const noexcept { return current == nullptr && next == items; }
    };

    void fail_message(producer& p, const std::string& why) {
        // After the ok line only closing tells the client; the message is not answered as
        // sent (POP3: not marked seen) and the session ends without UPDATE.
        c.log()(log_level::error, o.protocol + " read error in " + log_text(p.current->id, 200) + ": " + why);
        p.broken = true;
    }

    // On the pool: appends to `to` until it holds flush_octets or the queue is done.
    void produce(producer& p, wire_buffer& to) {
        while (to.size() < flush_octets && !p.broken) {
            if (!p.current) {
                if (p.next == queue.size()) return;
                auto& item = queue[p.next++];
                if (const auto* text = std::get_if<std::string>(&item)) {
                    to.append(*text);
                    continue;
                }
                const auto& r = std::get<act::stream_message>(item);
                auto m = o.storage && !mailbox.empty() ? o.storage->open(mailbox, r.id)
                                                       : result<message>(unexpected(errc::not_found));
                if (!m) {
                    c.log()(log_level::error, o.protocol + " cannot read " + log_text(r.id, 200) + ": " + m.error().message());
                    if (r.error_reply) to.append(r.error_reply(r.tag, m.error()));
                    p.finished.push_back(m.error());
                    continue;
                }
                p.current = &r;
                p.msg.emplace(std::move(*m));
                p.enc.emplace(r.top_lines);
                p.stored = p.msg->stored_octets();
                p.read = 0;
                const std::size_t want = static_cast<std::size_t>(std::clamp<std::uint64_t>(
                    p.stored, 1, p.stored > read_chunk_octets ? big_read_chunk_octets : read_chunk_octets));
                if (p.buf_size < want || p.buf_size > 2 * want) {
                    p.buf = std::make_unique_for_overwrite<char[]>(want);
                    p.buf_size = want;
                }
                to.append(r.ok_line);
            }
            // Stream the current message: one chunk per pass, then see whether it is done.
            if (!p.enc->done() && p.read < p.stored) {
                // Never past the size the store opened it with, even if the file grew since.
                const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(p.buf_size, p.stored - p.read));
                auto got = p.msg->read(std::span<char>(p.buf.get(), want));
                if (!got) return fail_message(p, got.error().message());
                if (*got == 0) return fail_message(p, "the file is shorter than its " + std::to_string(p.stored) + " octets");
                p.read += *got;
                encode(*p.enc, std::string_view(p.buf.get(), *got), to);
            }
            if (p.enc->done() || p.read >= p.stored) {
                // A RETR whose wire size differs from what LIST and the ok line announced (a
                // file changed under us, or a name whose W= lies) must not end as if whole.
                if (!p.current->top_lines && p.enc->wire_octets() != p.current->wire_octets)
                    return fail_message(p, std::to_string(p.enc->wire_octets()) + " wire octets, " +
                                               std::to_string(p.current->wire_octets) + " announced");
                to.commit(p.enc->finish_to(to.room(dot_encoder::finish_octets)));
                p.finished.push_back({});
                p.current = nullptr;
                p.msg.reset();  // its descriptor closes now
                p.enc.reset();
            }
        }
    }

    // The output broke (a message failed after its ok line, or a write failed): nothing more
    // is written, and nothing queued is ever produced again (it would follow a cut message as
    // if that one had ended).
    bool broke() {
        failed = true;
        queue.clear();
        queued_text = queued_messages = 0;
        out.clear();
        spare.clear();
        return false;
    }

    // Writes out the queue and what is buffered, taking in pipelined input between segments.
    asio::awaitable<bool> drain() {
        if (failed) co_return false;
        if (queue.empty()) co_return co_await flush() || broke();
        producer p;
        co_await c.run_blocking([&] { produce(p, out); });
        for (;;) {
            answered += p.finished.size();
            for (const auto& ec : p.finished) core.streamed(ec);
            p.finished.clear();
            if (p.broken) {
                // What was made before the failure goes out (the replies to the commands before
                // it, the cut message's start, never its final dot), then the connection closes.
                (void)co_await flush();
                co_return broke();
            }
            if (p.done(queue.size())) break;
            // `out` is full: write it while the pool makes the next segment in `spare`.
            using namespace asio::experimental::awaitable_operators;
            const bool written = co_await (flush() && c.run_blocking([&] { produce(p, spare); }));
            if (!written) co_return broke();
            std::swap(out, spare);  // flush() left `out` empty
            take_input();
        }
        queue.clear();
        queued_text = queued_messages = 0;
        co_return co_await flush() || broke();
    }

    // ---- input -----------------------------------------------------------------------

    // The deadline of a read now: the idle timeout, a partial line's own limit, the login limit,
    // a transfer's minimum rate.
    stream::clock::time_point read_deadline() const {
        const auto now = stream::clock::now();
        auto at = now + c.idle_timeout();
        if (line_started) at = std::min(at, *line_started + o.line_timeout);
        if (!logged_in) at = std::min(at, started + o.login_timeout);
        if (transfer_started && o.min_data_rate > 0) {
            // The idle timeout from the transfer's first wait, and 1/min_data_rate s per octet
            // read since (runner_options::min_data_rate); at most a year, so no overflow.
            const auto credit = std::chrono::duration<double>(
                std::min(static_cast<double>(fed - transfer_fed) / o.min_data_rate, 365.0 * 24 * 3600));
            at = std::min(at, *transfer_started + c.idle_timeout() +
                                  std::chrono::duration_cast<stream::clock::duration>(credit));
        }
        return at;
    }

    void start_read(stream::clock::time_point deadline, stream::on_expiry then = stream::on_expiry::close) {
        if (rd->active || rd->done || eof) return;
        rd->active = true;
        rd->event.expires_at(asio::steady_timer::time_point::max());
        c.io().set_deadline(deadline, then);
        asio::co_spawn(c.io().get_executor(), read_in_background(rd, c, then), asio::detached);
    }

    // Feeds a completed read to the core; false at EOF or error.
    bool consume() {
        if (!rd->done) return !eof;
        rd->done = false;
        if (rd->ec || rd->n == 0) {
            eof = true;
            return false;
        }
        // A cancelling deadline that passed just as these octets came is forgotten (while it
        // stood, later deadlines would be ignored).
        if (c.io().timed_out() && c.io().is_open()) c.io().clear_timeout();
        core.feed(std::string_view(rd->buf.data(), rd->n));
        fed += rd->n;
        return true;
    }

    // Between segments of long output: takes what the peer pipelined, up to the read-ahead
    // limit, without ever waiting for it, so a client that writes all its commands before
    // reading never deadlocks, and one that writes slowly never stalls the output.
    void take_input() {
        consume();
        if (eof || rd->active || core.buffered() >= o.read_ahead_octets) return;
        std::error_code ec;
        bool ready = c.io().socket().available(ec) > 0 && !ec;
        if (SSL* ssl = c.io().native_ssl(); ssl && SSL_pending(ssl) > 0) ready = true;
        // While we write, the peer is reading: only the idle limit applies to its input.
        if (ready) start_read(stream::clock::now() + c.idle_timeout());
    }

    asio::awaitable<void> wait_for_read() {
        if (rd->active) co_await rd->event.async_wait(use_tuple);
    }

    // Waits `delay` (everything queued is written), but watches the peer: one that hangs up
    // frees its slot now, not after the delay (DESIGN.md "Limits": slow peers); a shutdown ends
    // the wait too, with the core's notice (SMTP's 421 after a failed AUTH), as for a session
    // waiting for its next command. False if the peer left.
    asio::awaitable<bool> pause(std::chrono::milliseconds delay) {
        asio::steady_timer t(c.io().get_executor());
        const auto end = asio::steady_timer::clock_type::now() + delay;
        using namespace asio::experimental::awaitable_operators;
        // The peer's own limits go on during the delay (a login's too), and one that passes
        // ends the read without closing when the core has something to say then (say_timeout),
        // as in need_input; the delay itself is not counted against the idle limit (which starts
        // when it ends, as need_input will set it then).
        const bool notice = !core.timeout_notice().empty();
        for (;;) {
            if (c.stopping()) co_return co_await say_goodbye();  // before consume(): the read it cut
            if (timed_out_in_pause()) co_return true;
            if (!consume()) co_return false;
            const bool reading = core.buffered() < o.read_ahead_octets;
            if (reading)
                start_read(std::max(read_deadline(), std::chrono::time_point_cast<stream::clock::duration>(end) + c.idle_timeout()),
                           notice ? stream::on_expiry::cancel : stream::on_expiry::close);
            const auto now = asio::steady_timer::clock_type::now();
            if (now >= end) break;
            // A stop wakes the wait by cutting the read; with the read-ahead full there is none,
            // so the wait then looks again every quarter second.
            t.expires_at(reading ? end : std::min(end, now + std::chrono::milliseconds(250)));
            c.set_idle(true);
            c.set_notice_on_stop(!core.shutdown_notice().empty());
            (void)co_await (t.async_wait(use_tuple) || rd->event.async_wait(use_tuple));
            c.set_idle(false);
            c.set_notice_on_stop(false);
        }
        if (timed_out_in_pause()) co_return true;
        co_return consume() || !eof;
    }

    // A limit (the login limit: the idle limit starts after the delay) passed during a pause and
    // ended the read without closing: the pause ends now, and the replies the core gives next
    // (SMTP's 535 for the failed login) are written before the notice, which runner::drain
    // says before any other action is served (a guess or a message the peer pipelined behind
    // the failed login never is). Both within one notice_timeout.
    bool timed_out_in_pause() {
        if (!rd->done || rd->ec != make_error_code(errc::timed_out) || !c.io().is_open()) return false;
        c.io().clear_timeout();
        c.io().set_deadline_cap(std::min(stream::clock::now() + notice_timeout, c.read_limit()));
        timed_out = true;  // runner::drain: the replies due, then the notice, and the end
        return true;
    }

    // The server stops while the session waits for a command: the core's notice (SMTP: 421
    // 4.3.2, RFC 5321 3.8), if it has one, then the close, all within notice_timeout and the
    // shutdown grace, so a peer that reads nothing never holds the shutdown. Always false.
    asio::awaitable<bool> say_goodbye() {
        const auto notice = core.shutdown_notice();
        if (notice.empty() || failed || !c.io().is_open()) co_return false;
        if (rd->active) {  // no read may be in flight while the stream is shut down
            c.io().cancel();
            co_await wait_for_read();
        }
        rd->done = false;  // input no one will serve
        eof = true;
        c.io().set_deadline_cap(std::min(stream::clock::now() + notice_timeout, c.read_limit()));
        const auto unsent = co_await c.write(asio::buffer(notice.data(), notice.size()));
        if (!unsent) co_await c.io().shutdown(notice_timeout);
        co_return false;
    }

    // The peer sent nothing within the idle, line or login limit, and the read was ended
    // without closing: the core's timeout notice (SMTP: 421 4.4.2), then the close, within
    // notice_timeout. Always false.
    asio::awaitable<bool> say_timeout() {
        const auto notice = core.timeout_notice();
        rd->done = false;  // the timed-out read
        eof = true;
        if (!std::exchange(timed_out, false)) {  // else set when the limit passed: one notice_timeout in all
            c.io().clear_timeout();
            c.io().set_deadline_cap(std::min(stream::clock::now() + notice_timeout, c.read_limit()));
        }
        if (notice.empty() || failed) co_return false;
        const auto unsent = co_await c.write(asio::buffer(notice.data(), notice.size()));
        if (!unsent) co_await c.io().shutdown(notice_timeout);
        co_return false;
    }
};

runner::runner(connection& c, core_port& core, runner_options options)
    : c_(c), p_(std::make_unique<impl>(c, core, std::move(options))) {
    // Until logged_in(), nothing (a read, a slow reader of our replies) outlasts the login limit.
    if (p_->o.login_required)
        c_.io().set_deadline_cap(p_->started + p_->o.login_timeout);
    else
        p_->logged_in = true;
}

runner::~runner() = default;

void runner::set_mailbox(std::string mailbox) { p_->mailbox = std::move(mailbox); }

void runner::log_failure(std::string_view what, std::string_view text) const {
    c_.log()(log_level::error, p_->o.protocol + " " + std::string(what) + " failed: " + log_text(text));
}

void runner::logged_in(std::string_view user) {
    p_->logged_in = true;
    c_.io().set_deadline_cap(stream::clock::time_point::max());
    c_.set_user(user);
    c_.log()(log_level::info, p_->o.protocol + " login " + log_text(user) + " from " + c_.peer().address().to_string());
}

asio::awaitable<bool> runner::perform(act::send& a) {
    auto& p = *p_;
    if (p.failed) co_return false;
    if (!p.queue.empty()) {
        p.queued_text += a.octets.size();
        p.queue.emplace_back(std::move(a.octets));
        if (p.queued_text >= max_pending_output_octets || p.queue.size() >= max_queued) co_return co_await p.drain();
        co_return true;
    }
    p.out.append(a.octets);
    if (p.out.size() >= flush_octets) co_return co_await p.flush();
    co_return true;
}

asio::awaitable<bool> runner::perform(act::stream_message& a) {
    auto& p = *p_;
    if (p.failed) co_return false;
    if (p.timed_out) co_return co_await drain();  // the replies due, then the notice (POP3 never gets here: no notice)
    p.queue.emplace_back(std::move(a));
    ++p.queued_messages;
    if (p.queue.size() >= max_queued) co_return co_await p.drain();
    co_return true;
}

asio::awaitable<bool> runner::drain() {
    auto& p = *p_;
    const bool ok = co_await p.drain();
    if (!ok || !p.timed_out) co_return ok;
    // A limit passed during a pause (timed_out_in_pause): the replies due are written, then the notice.
    co_return co_await p.say_timeout();
}

asio::awaitable<bool> runner::drain_messages() {
    if (p_->queued_messages == 0) co_return true;
    co_return co_await p_->drain();
}

asio::awaitable<bool> runner::perform(act::need_input&) {
    auto& p = *p_;
    const auto answered = p.answered;
    const bool drained = co_await drain();  // runner::drain: also ends a timed-out session
    if (!drained) co_return false;
    // Answers may have released what the core held back (POP3: a deferred RSET/LAST/QUIT).
    if (p.answered != answered) co_return true;
    // An idle session keeps small buffers (DESIGN.md: memory per idle session).
    p.out.shrink(idle_buffer_octets);
    p.spare.shrink(0);
    for (;;) {
        if (p.rd->done) {
            // The server stopped while the session waited for a command, and ended the read
            // to let it say so (set_notice_on_stop below).
            if (p.rd->ec == asio::error::operation_aborted && c_.stopping() && c_.io().is_open() &&
                !p.core.in_exchange())
                co_return co_await p.say_goodbye();
            // The peer sent nothing in time, and the deadline only ended the read (below) so
            // the core can say so.
            if (p.rd->ec == make_error_code(errc::timed_out) && c_.io().is_open()) co_return co_await p.say_timeout();
            co_return p.consume();
        }
        if (p.eof) co_return false;
        // Waiting for a command, a partial one included: no exchange is in progress, so a
        // shutdown closes the session at once (DESIGN.md "Command lines"), after the core's
        // shutdown notice if it has one. A message being received is an exchange: it may
        // finish and get its reply.
        const bool exchange = p.core.in_exchange();
        if (c_.stopping() && !exchange) co_return co_await p.say_goodbye();
        if (const auto transfer = p.core.transfer(); transfer == 0) {
            p.transfer_started.reset();
        } else if (!p.transfer_started || p.transfer != transfer) {
            // A transfer's input begins (SMTP: a message after its 354, or its first BDAT
            // chunk; a new one also when the last one's end and its start came in one read):
            // the minimum data rate counts from here (runner_options::min_data_rate).
            p.transfer_started = stream::clock::now();
            p.transfer_fed = p.fed;
            p.transfer = transfer;
        }
        const std::size_t partial = p.core.partial_line_octets();  // the core took every whole line
        if (partial == 0) {
            p.line_started.reset();
        } else if (!p.line_started || p.line_offset != p.fed - partial) {
            // A new partial line: its own 60 s start now (one that keeps trickling in, or an
            // over-long one being dropped, does not).
            p.line_started = stream::clock::now();
            p.line_offset = p.fed - partial;
        }
        c_.set_idle(!exchange);
        c_.set_notice_on_stop(!exchange && !p.core.shutdown_notice().empty());
        // A stopping server's grace bounds this wait only (set_reading): never the hooks and
        // writes that follow, so a delivery under way is never cut from its reply.
        const auto until = std::min(p.read_deadline(), c_.read_limit());
        // Our own limit (not a stopping server's grace) ends the read without closing, when
        // the core has something to say then (say_timeout).
        const bool notice = until < c_.read_limit() && !p.core.timeout_notice().empty();
        c_.set_reading(true);
        const auto then = notice ? stream::on_expiry::cancel : stream::on_expiry::close;
        if (p.rd->active) {
            // A read started while we wrote or waited (a failed login's delay): now under the
            // same limit as one started here.
            c_.io().set_deadline(until, then);
            co_await p.wait_for_read();
        } else {
            // The common case: read here, no background read needed.
            p.rd->n = co_await c_.read_some_until(asio::buffer(p.rd->buf), p.rd->ec, until, then);
            p.rd->done = true;
        }
        if (!p.rd->ec || until == c_.read_limit()) {
            // Data came (or a stop's grace ended the wait): the peer's limits bounded the wait
            // for it, never the server's work on it (a delivery, its hooks) that follows: no
            // deadline until the next write or wait sets its own (the login limit stays, the
            // stream's cap). So a message that ended in time is never cut from its 250,
            // however long its delivery. A deadline that passed just as the data came is
            // forgotten (consume() does that for every read).
            if (notice && c_.io().timed_out()) c_.io().clear_timeout();
            c_.io().set_deadline(stream::clock::time_point::max());
        }
        c_.set_reading(false);
        c_.set_idle(false);
        c_.set_notice_on_stop(false);
    }
}

asio::awaitable<bool> runner::perform(act::start_tls&) {
    auto& p = *p_;
    const bool drained = co_await drain();  // runner::drain: also ends a timed-out session
    if (!drained) co_return false;
    if (p.rd->active) {
        // A read begun while the session waited (the delay after a failed login, with the
        // command pipelined behind it) is still in flight: ended here, and only octets it
        // brought count as input. Cancelling a plain socket's read loses none.
        c_.io().cancel();
        co_await p.wait_for_read();
    }
    const bool cancelled = p.rd->done && p.rd->n == 0 && p.rd->ec == asio::error::operation_aborted;
    if (cancelled) p.rd->done = false;
    if (p.rd->done && p.rd->n == 0) {
        // No octets: the peer left, or its limit passed just before (as need_input does).
        if (p.rd->ec == make_error_code(errc::timed_out) && c_.io().is_open()) co_return co_await p.say_timeout();
        co_return false;
    }
    if (p.rd->done) {
        // Octets read after the STLS/STARTTLS command would be the handshake's: a client that
        // sends anything then is not speaking TLS (RFC 2595 4, RFC 3207 4 discard them).
        c_.log()(log_level::info, p.o.protocol + " connection " + std::to_string(c_.id()) +
                                      ": input after the TLS upgrade command; closing");
        co_return false;
    }
    c_.set_idle(true);  // a shutdown need not wait for a handshake
    const auto ec = co_await c_.start_tls();
    c_.set_idle(false);
    if (ec) {
        c_.log()(log_level::info, p.o.protocol + " connection " + std::to_string(c_.id()) +
                                      ": TLS handshake failed: " + ec.message());
        co_return false;
    }
    p.core.tls_started();
    co_return true;
}

asio::awaitable<bool> runner::perform(act::login_failed& a) {
    auto& p = *p_;
    const bool drained = co_await drain();  // runner::drain: also ends a timed-out session
    if (!drained) co_return false;
    // The name with its spaces escaped too: one holding " from 203.0.113.9: " must not give
    // a fail2ban pattern another address to ban (or hide the real one).
    std::string user;
    for (const char ch : log_text(a.user)) {
        if (ch == ' ')
            user += "\\x20";
        else
            user += ch;
    }
    c_.log()(log_level::info, p.o.protocol + " failed login for " + user + " from " + c_.peer().address().to_string() +
                                  ": " + a.reason);
    if (a.delay.count() <= 0) co_return true;
    // Recent failures from the same address, or against the same account from anywhere, add
    // to the delay (DESIGN.md "Limits": failed logins).
    auto delay = a.delay;
    const auto now = login_throttle::clock::now();
    std::chrono::milliseconds extra{0};
    if (p.o.throttle) extra = p.o.throttle->failed(c_.peer().address().to_string(), now);
    if (p.o.account_throttle && !a.user.empty())
        extra = std::max(extra, p.o.account_throttle->failed(account_key(a.user), now));
    co_return co_await p.pause(delay + extra);
}

asio::awaitable<bool> runner::perform(act::delay& a) {
    auto& p = *p_;
    const bool drained = co_await drain();  // runner::drain: also ends a timed-out session
    if (!drained) co_return false;
    if (a.duration.count() <= 0) co_return true;
    co_return co_await p.pause(a.duration);
}

asio::awaitable<bool> runner::perform(act::close&) {
    co_await p_->drain();
    co_return false;
}

asio::awaitable<void> runner::finish() {
    auto& p = *p_;
    if (p.rd->active) {
        // A read still in flight would race the shutdown: end it (NOTE: over TLS the
        // close_notify is then not sent; only a client that pipelined a partial line gets here).
        c_.io().close();
        co_await p.wait_for_read();
    }
}

}  // namespace mailnet::net
