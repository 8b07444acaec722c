// postgresql_store.cpp: the PostgreSQL store (DESIGN.md "On disk"). Many front-ends over one
// database: a body stored once per delivery however many recipients; a delivery answered only
// after COMMIT, concurrent deliveries sharing one transaction (group commit); the POP3 lock a
// session-level advisory lock on one lock connection per front-end (plus the in-process
// table); deletions and seen flags at QUIT in one transaction; every change told to every
// front-end by NOTIFY, in commit order. docs/stores.md has the schema and the set-up.
#include "mailnet/store/postgresql.hpp"
#include "postgresql_module.hpp"

#ifndef MAILNET_MODULE_VERSION
#define MAILNET_MODULE_VERSION ""
#endif

#include "mailnet/dot_stuffing.hpp"
#include "mailnet/posix_io.hpp"

#include <libpq-fe.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <thread>
#include <utility>
#include <vector>

namespace mailnet {
namespace {

// A body is stored and read in pieces this big: what a RETR holds per session (1,000 sessions
// streaming at once hold 64 MiB), and the first piece comes with open()'s one query.
constexpr std::size_t chunk_octets = 64 * 1024;
constexpr std::size_t in_memory_octets = 256 * 1024;  // a delivery spools to a file beyond this
constexpr std::size_t max_batch = 64;                 // deliveries sharing one transaction
// Transactions of a front-end's deliveries under way at once: while one runs (its COMMIT
// waiting for the WAL flush) the next batch gathers. NOTE: one, not two: a transaction's fixed
// cost (its COMMIT and flush) outweighs its deliveries'; with two under way batches were
// smaller and each delivery cost the database about 1.5x the CPU (docs/benchmarks.md, bench:store).
constexpr std::size_t max_running = 1;
// ...unless the one under way carries this much: a batch with a large body (minutes over a
// slow link) must not hold up the small deliveries behind it, so a second may run beside it.
constexpr std::uint64_t large_batch_octets = 1024 * 1024;
constexpr std::size_t max_schema_octets = 40;
constexpr auto event_wait = std::chrono::seconds(2);  // a commit waits this long for its own events
constexpr auto reconnect_pause = std::chrono::seconds(1);
// A new listener waits this long for older transactions (the barrier: see wait_for_readers);
// every delivery waits behind it meanwhile. One that is not granted (a transaction that read
// the listeners table stays open: a pg_dump takes ACCESS SHARE for its whole run) is tried
// again with a shorter wait, first after a second, then ever more seldom (at most every 30 s),
// so a long-lived reader costs deliveries 100 ms of waiting at most every 30 s, not each second.
constexpr auto listen_barrier = std::chrono::milliseconds(500);
constexpr auto listen_barrier_retry = std::chrono::milliseconds(100);
constexpr auto listen_retry_first = std::chrono::seconds(1);
constexpr auto listen_retry_most = std::chrono::seconds(30);
// The event connection's liveness query (serve()) gets this long at most: a LISTENing
// connection that cannot answer SELECT 1 in it is taken for stuck, and replaced.
constexpr auto events_probe_limit = std::chrono::milliseconds(10000);
// How long a QUIT's commit waits for the mailbox's fence held by another commit of it.
constexpr auto fence_wait = std::chrono::seconds(5);

struct result_deleter {
    void operator()(PGresult* r) const noexcept { PQclear(r); }
};
using pg_result = std::unique_ptr<PGresult, result_deleter>;
struct conn_deleter {
    void operator()(PGconn* c) const noexcept { PQfinish(c); }
};
using pg_conn = std::unique_ptr<PGconn, conn_deleter>;

// One parameter of a statement: text unless `binary` (bytea, sent as raw octets).
struct param {
    std::string_view value;
    bool binary = false;
};

// The parameters in libpq's form (text ones as NUL-terminated copies).
struct wire_params {
    explicit wire_params(std::initializer_list<param> params) {
        texts.reserve(params.size());
        for (const auto& p : params) {
            if (p.binary) {
                values.push_back(p.value.data());
                lengths.push_back(static_cast<int>(p.value.size()));
                formats.push_back(1);
            } else {
                texts.emplace_back(p.value);
                values.push_back(texts.back().c_str());
                lengths.push_back(0);
                formats.push_back(0);
            }
        }
    }
    int count() const noexcept { return static_cast<int>(values.size()); }
    std::vector<const char*> values;
    std::vector<int> lengths;
    std::vector<int> formats;
    std::vector<std::string> texts;
};

// The statements run per message, each prepared once per connection, when first needed: the
// server then parses and plans them once, not once per delivery or RETR.
enum class statement : unsigned { deliver, more_chunk, open, read_chunk, xid, deliver_many };
struct statement_text {
    const char* name;
    const char* sql;  // "@." is the schema's qualifier (database::sql)
};
constexpr statement_text statements[] = {
    // One statement per delivery: its body, first piece, a message row per mailbox in the
    // order given and a NOTIFY each while some front-end listens (a statement with
    // data-modifying CTEs happens whole or not at all). $1 token, $2 stored octets, $3 wire octets, $4 first piece, $5 mailbox ids,
    // $6 channel, $7 front-end, $8 UIDL (empty: none), $9 seen.
    {"mailnet_deliver",
     "WITH b AS (INSERT INTO @.bodies (token, stored_octets, wire_octets) VALUES ($1, $2, $3) RETURNING id), "
     "c AS (INSERT INTO @.chunks (body_id, n, data) SELECT id, 0, $4::bytea FROM b WHERE octet_length($4::bytea) > 0), "
     "m AS (INSERT INTO @.messages (mailbox_id, body_id, uidl, seen) SELECT u.x, b.id, NULLIF($8, ''), $9::boolean FROM b, "
     "unnest($5::bigint[]) WITH ORDINALITY AS u(x, o) ORDER BY u.o RETURNING id, mailbox_id) "
     "SELECT b.id, m.id, m.mailbox_id, CASE WHEN EXISTS (SELECT 1 FROM @.listeners) THEN "
     "pg_notify($6, 'D ' || $7 || ' ' || m.id || ' ' || $3::text || ' ' || encode(x.name, 'hex')) END "
     "FROM b, m JOIN @.mailboxes x ON x.id = m.mailbox_id ORDER BY m.id"},
    // A further piece of the body of delivery $1 (found by its token: in a pipelined batch its
    // id is not known yet when this is sent).
    {"mailnet_more_chunk", "INSERT INTO @.chunks (body_id, n, data) SELECT id, $2, $3 FROM @.bodies WHERE token = $1"},
    // open(): the row and the first piece in one (results in binary form: the ids as text,
    // whose binary form is their text).
    {"mailnet_open",
     "SELECT b.id::text, b.stored_octets::text, k.data, "
     "(extract(epoch FROM b.received) * 1000000)::bigint::text FROM @.messages m "
     "JOIN @.mailboxes x ON x.id = m.mailbox_id JOIN @.bodies b ON b.id = m.body_id "
     "LEFT JOIN @.chunks k ON k.body_id = b.id AND k.n = 0 WHERE x.name = $1 AND m.id = $2"},
    {"mailnet_read_chunk", "SELECT data FROM @.chunks WHERE body_id = $1 AND n = $2"},
    // A delivery transaction's row in @.deliveries and its id, asked first (see
    // committer::send_batch): if COMMIT's answer is lost, the row says the transaction
    // committed, whatever POP3 deleted since (database::transaction_fate). $1 its token.
    {"mailnet_record", "INSERT INTO @.deliveries (token) VALUES ($1) RETURNING pg_current_xact_id()::text"},
    // deliver for several deliveries of one piece each, in one statement (the executor set up
    // once, not once per delivery: about 30% less of the server's CPU per delivery with 4 in
    // a transaction). Arrays, one element per delivery: $1 tokens, $2 stored octets, $3 wire
    // octets, $4 first pieces (binary), $5 mailbox ids (each a bigint[] literal), $8 UIDLs,
    // $9 seen; $6 channel, $7 front-end. Rows: token, body id, message id, mailbox id.
    {"mailnet_deliver_many",
     "WITH i AS (SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bytea[], $5::text[], $8::text[], "
     "$9::boolean[]) WITH ORDINALITY AS i(token, stored, wire, data, boxes, uidl, seen, o)), "
     "b AS (INSERT INTO @.bodies (token, stored_octets, wire_octets) SELECT token, stored, wire FROM i ORDER BY o "
     "RETURNING id, token), "
     "c AS (INSERT INTO @.chunks (body_id, n, data) SELECT b.id, 0, i.data FROM i JOIN b ON b.token = i.token "
     "WHERE octet_length(i.data) > 0), "
     "m AS (INSERT INTO @.messages (mailbox_id, body_id, uidl, seen) SELECT u.x, b.id, NULLIF(i.uidl, ''), i.seen "
     "FROM i JOIN b ON b.token = i.token, unnest(i.boxes::bigint[]) WITH ORDINALITY AS u(x, k) ORDER BY i.o, u.k "
     "RETURNING id, mailbox_id, body_id) "
     "SELECT b.token, b.id, m.id, m.mailbox_id, CASE WHEN EXISTS (SELECT 1 FROM @.listeners) THEN "
     "pg_notify($6, 'D ' || $7 || ' ' || m.id || ' ' || i.wire::text || ' ' || encode(x.name, 'hex')) END "
     "FROM m JOIN b ON b.id = m.body_id JOIN i ON i.token = b.token JOIN @.mailboxes x ON x.id = m.mailbox_id "
     "ORDER BY m.id"},
};

// A PostgreSQL array literal of `items` (text form, each element quoted): text[], bigint[],
// boolean[] alike.
std::string array_literal(const std::vector<std::string>& items) {
    std::string out = "{";
    for (std::size_t i = 0; i < items.size(); ++i) {
        if (i > 0) out += ',';
        out += '"';
        for (char ch : items[i]) {
            if (ch == '"' || ch == '\\') out += '\\';
            out += ch;
        }
        out += '"';
    }
    out += '}';
    return out;
}

// A bytea[] of `count` elements in PostgreSQL's binary array form (array_recv), built as they
// are added: dimensions 1, no NULLs, element type bytea (OID 17), `count` elements from index
// 1, then each element's length and octets.
class bytea_array {
public:
    explicit bytea_array(std::size_t count) {
        put(1);
        put(0);
        put(17);
        put(static_cast<std::uint32_t>(count));
        put(1);
    }
    void add(std::string_view item) {
        put(static_cast<std::uint32_t>(item.size()));
        out_ += item;
    }
    std::string_view octets() const noexcept { return out_; }

private:
    void put(std::uint32_t v) {
        const char b[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
        out_.append(b, 4);
    }
    std::string out_;
};
// Drops up to 1,000 rows of delivery transactions older than a day (the fate of one is asked,
// if ever, within 30 s of its COMMIT), oldest first; rows another front-end's prune holds are skipped, so
// front-ends pruning at once neither wait for nor deadlock with each other.
constexpr const char* prune_deliveries =
    "DELETE FROM @.deliveries WHERE token = ANY (ARRAY (SELECT token FROM @.deliveries WHERE at < now() - interval '1 day' "
    "ORDER BY at LIMIT 1000 FOR UPDATE SKIP LOCKED))";
constexpr int prune_most = 1000;
constexpr auto prune_every = std::chrono::minutes(1);  // unless the last one left some behind
// Drops the listeners table's rows of server processes that are gone.
constexpr const char* drop_gone_listeners =
    "DELETE FROM @.listeners WHERE pid NOT IN (SELECT pid FROM pg_stat_activity WHERE pid IS NOT NULL)";

constexpr std::uint32_t bit(statement s) { return 1u << static_cast<unsigned>(s); }

// A pooled connection and the statements prepared on it, which live and die with it.
struct connection {
    pg_conn handle;
    std::uint32_t prepared = 0;  // bit(statement) for each
    std::uint32_t refused = 0;   // bit(statement) for each the server would not prepare
    std::uint32_t forgotten = 0; // times the server answered 26000 (it forgot them all)
    std::uint64_t cuts = 0;      // database::cuts() when it was made
    PGconn* get() const noexcept { return handle.get(); }
    operator PGconn*() const noexcept { return handle.get(); }  // for the unprepared calls
};

std::string hex(std::string_view octets) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(octets.size() * 2);
    for (unsigned char c : octets) {
        out += digits[c >> 4];
        out += digits[c & 15];
    }
    return out;
}

std::optional<std::string> unhex(std::string_view text) {
    if (text.size() % 2) return std::nullopt;
    auto nibble = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        return -1;
    };
    std::string out;
    out.reserve(text.size() / 2);
    for (std::size_t i = 0; i < text.size(); i += 2) {
        const int hi = nibble(text[i]);
        const int lo = nibble(text[i + 1]);
        if (hi < 0 || lo < 0) return std::nullopt;
        out += static_cast<char>(hi * 16 + lo);
    }
    return out;
}

// A 64-bit key for pg_advisory_lock: the first 8 octets of SHA-256(schema NUL mailbox). Two
// mailboxes sharing a key would only make one wait for the other ([IN-USE]), never mix them.
long long lock_key(std::string_view schema, std::string_view mailbox) {
    std::string input(schema);
    input += '\0';
    input += mailbox;
    std::array<unsigned char, 32> md{};
    unsigned int len = 0;
    (void)EVP_Digest(input.data(), input.size(), md.data(), &len, EVP_sha256(), nullptr);
    std::uint64_t key = 0;
    for (int i = 0; i < 8; ++i) key = (key << 8) | md[static_cast<std::size_t>(i)];
    return static_cast<long long>(key);
}

std::string random_token() {
    std::array<unsigned char, 12> r{};
    if (RAND_bytes(r.data(), static_cast<int>(r.size())) != 1) {
        // NOTE: without OpenSSL's generator the pid and the clock still tell front-ends apart.
        const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
        std::memcpy(r.data(), &now, std::min(sizeof now, r.size()));
    }
    return hex(std::string_view(reinterpret_cast<const char*>(r.data()), r.size()));
}

bool valid_schema(std::string_view s) {
    if (s.empty() || s.size() > max_schema_octets) return false;
    if (!(s[0] == '_' || (s[0] >= 'a' && s[0] <= 'z'))) return false;
    return std::all_of(s.begin(), s.end(),
                       [](char c) { return c == '_' || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); });
}

// Cuts a connection whose call has not come back by its deadline. libpq waits for the server
// without end (a server that is stopped, or a stuck proxy, keeps the TCP connection alive, so
// neither keepalives nor tcp_user_timeout end it): shutdown() of its socket from this thread
// ends the wait with an error, and the caller's failure path (451, [SYS/TEMP], a new
// connection; for a COMMIT, the lookup of what became of it) takes over. One thread per
// store, started by the first call; a call's guard disarms it before the socket can close.
class call_watchdog {
public:
    using clock = std::chrono::steady_clock;
    ~call_watchdog() {
        {
            std::lock_guard l(m_);
            stopping_ = true;
        }
        cv_.notify_all();
        if (t_.joinable()) t_.join();
        for (const auto& [id, e] : armed_) ::close(e.fd);  // none once every guard is gone
    }
    /// Arms a deadline for `fd` (a connection's socket); 0 when there is none to watch. A
    /// duplicate of the descriptor is kept till disarm(): libpq may close `fd` itself (an
    /// error) and the number go to another socket meanwhile; the duplicate still names ours.
    std::uint64_t arm(int fd, clock::duration within, log_sink log) {
        if (fd < 0 || within <= clock::duration::zero()) return 0;
        const int own = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
        if (own < 0) return 0;
        std::lock_guard l(m_);
        if (!t_.joinable()) {
            try {
                t_ = std::thread([this] { run(); });
            } catch (const std::system_error&) {
                return 0;  // no thread: calls go unwatched, as before
            }
        }
        if (!log_) log_ = std::move(log);
        const auto id = next_++;
        const auto deadline = clock::now() + within;
        armed_.emplace(id, entry{deadline, own, within});
        // Woken only for a deadline before the one it waits for (with one call_timeout, only
        // when it waits for none): no thread switch per call.
        if (deadline < waiting_until_) cv_.notify_all();
        return id;
    }
    /// Called on the watchdog's thread, under its lock, as each cut begins (cheap: a count).
    std::function<void()> on_cut;
    /// Once it returns, `fd` is never touched for this call.
    void disarm(std::uint64_t id) {
        if (id == 0) return;
        int own = -1;
        {
            std::lock_guard l(m_);
            const auto it = armed_.find(id);
            if (it == armed_.end()) return;  // cut: run() closed it
            own = it->second.fd;
            armed_.erase(it);
        }
        ::close(own);
    }

private:
    struct entry {
        clock::time_point deadline;
        int fd;
        clock::duration within;
    };
    void run() {
        std::unique_lock l(m_);
        while (!stopping_) {
            auto first = armed_.end();
            for (auto it = armed_.begin(); it != armed_.end(); ++it)
                if (first == armed_.end() || it->second.deadline < first->second.deadline) first = it;
            if (first == armed_.end()) {
                waiting_until_ = clock::time_point::max();
                cv_.wait(l);
                continue;
            }
            if (const auto deadline = first->second.deadline; clock::now() < deadline) {
                // A copy: the entry may be disarmed (erased) while this waits.
                waiting_until_ = deadline;
                cv_.wait_until(l, deadline);
                continue;
            }
            // Counted first, so the call that fails sees the cut. shutdown() acts on the
            // socket, so libpq's own descriptor sees it too.
            if (on_cut) on_cut();
            ::shutdown(first->second.fd, SHUT_RDWR);
            ::close(first->second.fd);
            const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(first->second.within).count();
            armed_.erase(first);
            l.unlock();
            if (log_)
                log_(log_level::error, "postgresql: no answer from the server within " + std::to_string(ms / 1000) +
                                           (ms % 1000 >= 100 ? "." + std::to_string(ms % 1000 / 100) : std::string()) +
                                           " s: the connection is cut (the call fails temporarily)");
            l.lock();
        }
    }
    std::mutex m_;
    std::condition_variable cv_;
    std::map<std::uint64_t, entry> armed_;  // under m_
    std::uint64_t next_ = 1;
    clock::time_point waiting_until_ = clock::time_point::min();  // run()'s wait: max when idle; min before it runs
    bool stopping_ = false;
    log_sink log_;
    std::thread t_;
};

// The store's state, shared with its deliveries and message sources (which may outlive it).
class database : public std::enable_shared_from_this<database> {
public:
    database(postgresql_options o, std::shared_ptr<event_hub> hub)
        : o_(std::move(o)), hub_(std::move(hub)), front_end_(random_token()) {
        watchdog_.on_cut = [this] { cuts_.fetch_add(1, std::memory_order_seq_cst); };
        for (const auto& st : statements) {
            texts_.push_back(sql(st.sql));
            // The schema in the name too: a session that prepared another schema's statement
            // (a pooler sharing server sessions) answers "unknown" (26000), never runs it. A
            // '.' between, which no schema name holds: "mailnet_deliver_many" of schema "x"
            // and "mailnet_deliver" of schema "many_x" never share a name.
            names_.push_back(std::string(st.name) + "." + o_.schema);
        }
        // The URI's own options= (see connect()); a URI libpq cannot read fails at connect.
        if (PQconninfoOption* opts = PQconninfoParse(o_.uri.c_str(), nullptr)) {
            for (PQconninfoOption* k = opts; k->keyword; ++k)
                if (std::string_view(k->keyword) == "options" && k->val) uri_options_ = k->val;
            PQconninfoFree(opts);
        }
    }
    ~database() { stop_listener(); }

    const postgresql_options& options() const noexcept { return o_; }
    const std::string& front_end() const noexcept { return front_end_; }

    // SQL with "@." replaced by the schema's qualifier.
    std::string sql(std::string_view text) const {
        std::string out;
        out.reserve(text.size() + 32);
        for (std::size_t i = 0; i < text.size(); ++i) {
            if (text[i] == '@' && i + 1 < text.size() && text[i + 1] == '.') {
                out += o_.schema;
                out += '.';
                ++i;
            } else {
                out += text[i];
            }
        }
        return out;
    }

    // ---- connections ----------------------------------------------------------------------

    result<pg_conn> connect(const char* purpose) const {
        const std::string timeout = std::to_string(std::max<long long>(2, std::chrono::ceil<std::chrono::seconds>(o_.wait).count()));
        // "mailnet pool|locks|events SCHEMA": an operator (and a test) can tell them apart.
        const std::string app = std::string("mailnet ") + purpose + " " + o_.schema;
        // The session's settings this store relies on, whatever the role's or database's
        // defaults: durable commits (DESIGN.md: 250 only after a durable COMMIT); READ COMMITTED
        // (the deletion's locking); no statement or lock wait without end; no idle timeout
        // (the lock connection's advisory locks and the event connection live on while idle).
        static constexpr const char* settings =
            "-c synchronous_commit=on -c default_transaction_isolation=read\\ committed "
            "-c statement_timeout=60000 -c lock_timeout=20000 -c idle_session_timeout=0 "
            "-c idle_in_transaction_session_timeout=60000";
        // The URI's own `options=` come after ours in the one value given after the URI (libpq
        // keeps a keyword's last value; the server the last -c of a setting): so a URI changes
        // only the settings it names, and the others stay ours whatever a role's or database's
        // defaults or postgresql.conf say (a client's settings override those), also in
        // connections made long after the start-time check (migrate()).
        const std::string options = uri_options_.empty() ? std::string(settings) : std::string(settings) + " " + uri_options_;
        // tcp_user_timeout: data sent and not acknowledged for 30 s (a vanished server) ends
        // the connection, which keepalives alone would leave for the kernel's ~15 minutes.
        const char* keys[] = {"connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count",
                              "tcp_user_timeout", "application_name", "dbname", "options", nullptr};
        const char* values[] = {timeout.c_str(), "1", "5", "2", "3", "30000", app.c_str(), o_.uri.c_str(), options.c_str(), nullptr};
        pg_conn c(PQconnectdbParams(keys, values, 1));
        if (!c || PQstatus(c.get()) != CONNECTION_OK) {
            // Once per outage: every session's attempt would otherwise log the same line.
            if (!unreachable_.exchange(true))
                log(log_level::error, std::string("postgresql: cannot connect (") + purpose +
                                          "): " + (c ? one_line(PQerrorMessage(c.get())) : "out of memory") +
                                          "; calls fail temporarily until it is back");
            return unexpected(errc::temporary_failure);
        }
        if (unreachable_.exchange(false)) log(log_level::warning, "postgresql: the database can be reached again");
        PQsetNoticeProcessor(c.get(), [](void*, const char*) {}, nullptr);  // CREATE ... IF NOT EXISTS notices
        return c;
    }

    // Disarms its deadline (call_watchdog) when it goes.
    struct call_guard {
        call_watchdog* w;
        std::uint64_t id;
        call_guard(call_watchdog* ww, std::uint64_t i) : w(ww), id(i) {}
        call_guard(const call_guard&) = delete;
        call_guard& operator=(const call_guard&) = delete;
        ~call_guard() { w->disarm(id); }
    };
    // The deadline of a call on `c` (options::call_timeout), until the guard goes.
    // A shorter `limit` than call_timeout, when given, is the deadline instead.
    [[nodiscard]] call_guard watch(PGconn* c, std::chrono::milliseconds limit = {}) const {
        const auto t = limit.count() <= 0 ? o_.call_timeout : o_.call_timeout.count() <= 0 ? limit : std::min(limit, o_.call_timeout);
        return call_guard(&watchdog_, watchdog_.arm(PQsocket(c), t, o_.log));
    }

    // Runs one statement; any failure is logged and errc::temporary_failure (the client's
    // reply is [SYS/TEMP] or 451 whatever the database said). Under call_timeout, or `limit`
    // if shorter.
    result<pg_result> exec(PGconn* c, std::string_view text, std::initializer_list<param> params = {},
                           bool binary_result = false, std::chrono::milliseconds limit = {}) const {
        const auto deadline = watch(c, limit);
        const wire_params w(params);
        const std::string q(text);
        return checked(c, pg_result(PQexecParams(c, q.c_str(), w.count(), nullptr, w.values.data(), w.lengths.data(),
                                                 w.formats.data(), binary_result ? 1 : 0)));
    }

    // Runs statement `s`, prepared on `c` first if it is not yet; as exec() otherwise.
    result<pg_result> run(connection& c, statement s, std::initializer_list<param> params, bool binary_result = false) {
        const wire_params w(params);
        for (int attempt = 0;; ++attempt) {
            if (!prepare(c, s)) return exec(c, texts_[static_cast<unsigned>(s)], params, binary_result);
            const auto deadline = watch(c);
            pg_result r(PQexecPrepared(c, names_[static_cast<unsigned>(s)].c_str(), w.count(), w.values.data(),
                                       w.lengths.data(), w.formats.data(), binary_result ? 1 : 0));
            // Outside a transaction, one the server forgot is prepared again and run once more.
            if (forget_if_unprepared(c, r.get()) && attempt == 0 && PQtransactionStatus(c) == PQTRANS_IDLE) continue;
            return checked(c, std::move(r));
        }
    }

    // Sends statement `s` in pipeline mode (prepared if it is, else with its text); false if
    // it could not be queued (the connection is lost).
    bool send(connection& c, statement s, std::initializer_list<param> params) const {
        if (!(c.prepared & bit(s))) return send(c, texts_[static_cast<unsigned>(s)], params);
        const wire_params w(params);
        return PQsendQueryPrepared(c, names_[static_cast<unsigned>(s)].c_str(), w.count(), w.values.data(),
                                   w.lengths.data(), w.formats.data(), 0) == 1;
    }
    bool send(PGconn* c, const std::string& text, std::initializer_list<param> params) const {
        const wire_params w(params);
        return PQsendQueryParams(c, text.c_str(), w.count(), nullptr, w.values.data(), w.lengths.data(),
                                 w.formats.data(), 0) == 1;
    }

    // Prepares `s` on `c` unless it is already; false if it could not be (the caller then
    // sends the statement's text, which fails alike if the cause was more than the PREPARE).
    // Only outside a transaction: a failed PREPARE would abort it.
    bool prepare(connection& c, statement s) const {
        if (c.prepared & bit(s)) return true;
        if ((c.refused & bit(s)) || PQtransactionStatus(c) != PQTRANS_IDLE) return false;
        const auto deadline = watch(c);
        pg_result r(PQprepare(c, names_[static_cast<unsigned>(s)].c_str(), texts_[static_cast<unsigned>(s)].c_str(), 0, nullptr));
        if (!r || PQresultStatus(r.get()) != PGRES_COMMAND_OK) {
            const char* state = r ? PQresultErrorField(r.get(), PG_DIAG_SQLSTATE) : nullptr;
            if (state && std::string_view(state) == "42P05") {
                // Still prepared on the server (a 26000 for another statement cleared every
                // bit): ours, by its name (statement and schema).
                c.prepared |= bit(s);
                return true;
            }
            if (PQstatus(c) == CONNECTION_OK) {  // else the statement's own failure says it
                log(log_level::warning, "postgresql: cannot prepare a statement (sent unprepared on this connection): " +
                                        one_line(r ? PQresultErrorMessage(r.get()) : PQerrorMessage(c)));
                c.refused |= bit(s);  // not asked again on this connection: no round trip and warning each time
            }
            return false;
        }
        c.prepared |= bit(s);
        return true;
    }

    // A server that no longer knows our prepared statements (26000: a DISCARD ALL by a
    // pooler) has them prepared again on their next use.
    static bool forget_if_unprepared(connection& c, const PGresult* r) noexcept {
        const char* state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
        if (!state || std::string_view(state) != "26000") return false;
        c.prepared = 0;
        ++c.forgotten;
        return true;
    }

    // A result that is not a success is logged and becomes errc::temporary_failure.
    result<pg_result> checked(PGconn* c, pg_result r) const {
        const auto status = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
        if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
            log(log_level::error, "postgresql: " + one_line(r ? PQresultErrorMessage(r.get()) : PQerrorMessage(c)));
            return unexpected(errc::temporary_failure);
        }
        return r;
    }

    // A pooled connection, returned on destruction (dropped if broken or inside a transaction).
    class lease {
    public:
        lease(std::shared_ptr<database> db, connection c) : db_(std::move(db)), c_(std::move(c)) {}
        lease(lease&& other) noexcept : db_(std::move(other.db_)), c_(std::move(other.c_)) {}
        // Gives the connection held back to the pool first (a defaulted one would close it
        // without the pool knowing: one slot lost each time).
        lease& operator=(lease&& other) noexcept {
            if (this != &other) {
                if (db_) db_->give_back(std::move(c_));
                db_ = std::move(other.db_);
                c_ = std::move(other.c_);
            }
            return *this;
        }
        ~lease() {
            if (db_) db_->give_back(std::move(c_));
        }
        PGconn* get() const noexcept { return c_.get(); }
        connection& conn() noexcept { return c_; }

    private:
        std::shared_ptr<database> db_;
        connection c_;
    };

    result<lease> take() {
        std::unique_lock lock(pool_mutex_);
        const bool free = pool_cv_.wait_for(lock, o_.wait, [&] { return !idle_.empty() || open_ < std::max<std::size_t>(1, o_.pool_size); });
        if (!free) {
            log(log_level::error, "postgresql: every pooled connection busy for " + std::to_string(o_.wait.count()) + " ms");
            return unexpected(errc::temporary_failure);
        }
        while (!idle_.empty()) {
            connection c = std::move(idle_.back());
            idle_.pop_back();
            // One the server closed while it was idle (a restart, a pooler) has its EOF waiting;
            // one made before a call was cut for want of an answer (a server that stopped
            // answering keeps TCP up: nothing tells) would only wait out another deadline.
            pollfd p{PQsocket(c.get()), POLLIN, 0};
            if (c.cuts != cuts() ||
                (::poll(&p, 1, 0) > 0 && (PQconsumeInput(c.get()) == 0 || PQstatus(c.get()) != CONNECTION_OK))) {
                --open_;
                continue;
            }
            return lease(shared_from_this(), std::move(c));
        }
        ++open_;
        lock.unlock();
        auto c = connect("pool");
        if (!c) {
            std::lock_guard relock(pool_mutex_);
            --open_;
            pool_cv_.notify_one();
            return unexpected(c.error());
        }
        connection made{std::move(*c)};
        made.cuts = cuts();
        return lease(shared_from_this(), std::move(made));
    }

    // Calls cut for want of an answer so far (call_watchdog): a call that failed with it
    // changed is not tried again on another connection.
    std::uint64_t cuts() const noexcept { return cuts_.load(std::memory_order_seq_cst); }

    // Runs `f(connection&)` on a pooled connection and, if it failed because that connection was
    // lost (the server restarted, a pooler cut an idle connection), once more on a new one.
    // Only for calls that may run twice: reads, and QUIT's commit (a deletion repeated finds
    // nothing to delete).
    template <class F>
    auto with_retry(F&& f) -> decltype(f(std::declval<connection&>())) {
        for (int attempt = 0;; ++attempt) {
            auto l = take();
            if (!l) return unexpected(l.error());
            const auto cut_before = cuts();
            auto r = f(l->conn());
            if (r || attempt == 1 || PQstatus(l->get()) != CONNECTION_BAD || cuts() != cut_before) return r;
        }
    }

    void give_back(connection c) noexcept {
        std::lock_guard lock(pool_mutex_);
        if (c.get() && PQstatus(c) == CONNECTION_OK && PQtransactionStatus(c) == PQTRANS_IDLE &&
            PQpipelineStatus(c) == PQ_PIPELINE_OFF) {
            idle_.push_back(std::move(c));
        } else {
            --open_;
            // A lost connection: its idle siblings most likely went with it (a restart).
            if (c.get() && PQstatus(c) == CONNECTION_BAD) {
                open_ -= idle_.size();
                idle_.clear();
            }
        }
        pool_cv_.notify_one();
    }

    // ---- schema ---------------------------------------------------------------------------

    result<void> migrate() {
        auto l = take();
        if (!l) return unexpected(l.error());
        PGconn* c = l->get();
        auto fail = [&](std::error_code e) -> result<void> {
            (void)exec(c, "ROLLBACK");
            return unexpected(e);
        };
        // The URI's own `options=` come after the settings connect() gives, so they can change
        // them: one that weakens durability or the isolation the store's locking and its
        // listeners barrier rely on is refused at start, never run with.
        // A pooler that drops the connection's options (PgBouncer's ignore_startup_parameters
        // = options) leaves the role's and database's settings in force: found here too.
        auto settings = exec(c, "SELECT current_setting('synchronous_commit'), current_setting('transaction_isolation'), "
                                "current_setting('idle_session_timeout')");
        if (!settings) return unexpected(settings.error());
        const std::string_view commit = PQgetvalue(settings->get(), 0, 0), isolation = PQgetvalue(settings->get(), 0, 1),
                               idle = PQgetvalue(settings->get(), 0, 2);
        if ((commit != "on" && commit != "remote_apply") || isolation != "read committed" || idle != "0") {
            log(log_level::error, "postgresql: the session has synchronous_commit=" + std::string(commit) + ", isolation " +
                                      std::string(isolation) + " and idle_session_timeout=" + std::string(idle) +
                                      "; this store needs synchronous_commit on or remote_apply (no 250 before a "
                                      "durable COMMIT), read committed and idle_session_timeout 0 (its lock connection's "
                                      "POP3 locks live while it is idle). It asks for them in the connection's options; "
                                      "the URI's options=, or a pooler that drops them (PgBouncer: ignore_startup_parameters), "
                                      "left these: set them for the role (ALTER ROLE ... SET) or in the URI");
            return unexpected(errc::bad_input);
        }
        // A name SQL keeps for itself ("user", "order": the statements would not parse) or
        // the server does (pg_...) is a configuration error, not a temporary failure.
        // (A ColId: reserved words, catcode R, and type or function names, T, are not one.)
        if (auto r = exec(c, "SELECT NOT EXISTS (SELECT 1 FROM pg_get_keywords() WHERE word = $1 AND catcode IN ('R', 'T')) "
                             "AND left($1, 3) <> 'pg_'",
                          {{o_.schema}});
            !r || std::string_view(PQgetvalue(r->get(), 0, 0)) != "t") {
            if (!r) return unexpected(r.error());
            log(log_level::error, "postgresql: the schema name " + o_.schema +
                                      " is a reserved word of SQL or begins with pg_: choose another");
            return unexpected(errc::bad_config);
        }
        if (auto r = exec(c, "BEGIN"); !r) return unexpected(r.error());
        // One front-end at a time creates or migrates; the others wait, then find it done.
        const std::string key = std::to_string(lock_key(o_.schema, "\x01migrate"));
        if (auto r = exec(c, "SELECT pg_advisory_xact_lock($1::bigint)", {{key}}); !r) return fail(r.error());
        // Only a first start creates: a role with no CREATE right runs on a schema made for it.
        const std::string version_table = o_.schema + ".version";
        auto there = exec(c, "SELECT to_regclass($1) IS NOT NULL", {{version_table}});
        if (!there) return fail(there.error());
        if (std::string_view(PQgetvalue(there->get(), 0, 0)) != "t") {
            // CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when the schema is
            // there: a schema made beforehand for a role without that right is looked up first.
            auto schema = exec(c, "SELECT 1 FROM pg_namespace WHERE nspname = $1", {{o_.schema}});
            if (!schema) return fail(schema.error());
            if (PQntuples(schema->get()) == 0)
                if (auto r = exec(c, "CREATE SCHEMA " + o_.schema); !r) return fail(r.error());
            if (auto r = exec(c, sql("CREATE TABLE IF NOT EXISTS @.version (one boolean PRIMARY KEY DEFAULT true CHECK (one), "
                                     "version integer NOT NULL)"));
                !r)
                return fail(r.error());
        }
        auto v = exec(c, sql("SELECT version FROM @.version"));
        if (!v) return fail(v.error());
        const int have = PQntuples(v->get()) ? std::atoi(PQgetvalue(v->get(), 0, 0)) : 0;
        if (have > postgresql_schema_version) {
            log(log_level::error, "postgresql: schema " + o_.schema + " is at version " + std::to_string(have) +
                                      ", newer than this program's " + std::to_string(postgresql_schema_version));
            return fail(make_error_code(errc::bad_config));
        }
        if (have < 1) {
            static constexpr const char* v1[] = {
                // A mailbox is made by its first delivery and stays (store::mailboxes()).
                "CREATE TABLE @.mailboxes (id bigserial PRIMARY KEY, name bytea NOT NULL UNIQUE)",
                // A body is stored once, whatever the number of recipients; `token` is the
                // delivery's name (delivery::name()), so a commit whose answer was lost can be
                // found again; `wire_octets` is the size with CRLF line ends (RFC 1939 LIST).
                "CREATE TABLE @.bodies (id bigserial PRIMARY KEY, token text NOT NULL UNIQUE, "
                "stored_octets bigint NOT NULL, wire_octets bigint NOT NULL, "
                "received timestamptz NOT NULL DEFAULT now())",
                "CREATE TABLE @.chunks (body_id bigint NOT NULL REFERENCES @.bodies ON DELETE CASCADE, "
                "n integer NOT NULL, data bytea NOT NULL, PRIMARY KEY (body_id, n))",
                // One row per copy: the id (its decimal form is the store's message id and,
                // unless `uidl` is set by an import, its UIDL) orders a mailbox by delivery.
                "CREATE TABLE @.messages (id bigserial PRIMARY KEY, "
                "mailbox_id bigint NOT NULL REFERENCES @.mailboxes, body_id bigint NOT NULL REFERENCES @.bodies, "
                "uidl text, seen boolean NOT NULL DEFAULT false)",
                "CREATE INDEX ON @.messages (mailbox_id, id)",
                "CREATE INDEX ON @.messages (body_id)",
                "CREATE UNIQUE INDEX ON @.messages (mailbox_id, uidl) WHERE uidl IS NOT NULL",
                "INSERT INTO @.version (version) VALUES (1)",
            };
            for (const char* s : v1)
                if (auto r = exec(c, sql(s)); !r) return fail(r.error());
        }
        // Whoever may change messages may change a table a migration adds: a role given its
        // rights on the tables of an older version (GRANT ... ON ALL TABLES) would else fail.
        auto grant_as_on_messages = [&](const char* table) -> result<void> {
            auto grants = exec(c, "SELECT format('GRANT %s ON %I.%I TO %s', a.privilege_type, $1::text, $2::text, "
                                  "CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END) "
                                  "FROM pg_class k CROSS JOIN aclexplode(k.relacl) a LEFT JOIN pg_roles r ON r.oid = a.grantee "
                                  "WHERE k.oid = ($1::text || '.messages')::regclass AND a.grantee <> k.relowner "
                                  "AND a.privilege_type IN ('SELECT', 'INSERT', 'UPDATE', 'DELETE')",
                               {{o_.schema}, {table}});
            if (!grants) return unexpected(grants.error());
            for (int i = 0; i < PQntuples(grants->get()); ++i)
                if (auto r = exec(c, PQgetvalue(grants->get(), i, 0)); !r) return unexpected(r.error());
            return {};
        };
        if (have < 2) {
            static constexpr const char* v2[] = {
                // The front-ends whose event connection listens, one row each (its server
                // process): a change sends its NOTIFY only while there is one, since every
                // transaction that notifies holds one server-wide lock through its commit, WAL
                // flush included, so front-ends that nobody listens to would commit one by one.
                "CREATE TABLE @.listeners (pid integer PRIMARY KEY, front_end text NOT NULL, "
                "since timestamptz NOT NULL DEFAULT now())",
                "UPDATE @.version SET version = 2",
            };
            for (const char* s : v2)
                if (auto r = exec(c, sql(s)); !r) return fail(r.error());
            if (auto r = grant_as_on_messages("listeners"); !r) return fail(r.error());
        }
        if (have < 3) {
            static constexpr const char* v3[] = {
                // One row per delivery transaction, written by the transaction itself, so that
                // one whose COMMIT's answer was lost can be told committed even after POP3
                // deleted its messages (and with them its bodies, whose tokens said it before).
                // Nothing else touches it; rows older than a day are pruned (prune_deliveries).
                "CREATE TABLE @.deliveries (token text PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())",
                "CREATE INDEX ON @.deliveries (at)",
                "UPDATE @.version SET version = 3",
            };
            for (const char* s : v3)
                if (auto r = exec(c, sql(s)); !r) return fail(r.error());
            if (auto r = grant_as_on_messages("deliveries"); !r) return fail(r.error());
        }
        // Rows of listeners whose server process is gone (a front-end killed, its connection
        // cut) only make changes notify for nobody: dropped at each start.
        if (auto r = exec(c, sql(drop_gone_listeners)); !r) return fail(r.error());
        // An event connection of a program of version 1 still running listens without a row:
        // it gets one, so that changes keep notifying it (dropped when it goes).
        if (auto r = exec(c, sql("INSERT INTO @.listeners (pid, front_end) SELECT pid, '' FROM pg_stat_activity "
                                 "WHERE datname = current_database() AND application_name = $1 ON CONFLICT (pid) DO NOTHING"),
                          {{"mailnet events " + o_.schema}});
            !r)
            return fail(r.error());
        if (auto r = exec(c, "COMMIT"); !r) return unexpected(r.error());
        return {};
    }

    // ---- mailboxes ------------------------------------------------------------------------

    // The id of a mailbox, made if `create`; 0 if it does not exist.
    result<long long> mailbox_id(PGconn* c, std::string_view name, bool create) {
        {
            std::lock_guard lock(ids_mutex_);
            if (auto it = ids_.find(name); it != ids_.end()) return it->second;
        }
        if (create) {
            if (auto r = exec(c, sql("INSERT INTO @.mailboxes (name) VALUES ($1) ON CONFLICT (name) DO NOTHING"),
                              {{name, true}});
                !r)
                return unexpected(r.error());
        }
        auto r = exec(c, sql("SELECT id FROM @.mailboxes WHERE name = $1"), {{name, true}});
        if (!r) return unexpected(r.error());
        if (PQntuples(r->get()) == 0) return 0LL;
        const long long id = std::atoll(PQgetvalue(r->get(), 0, 0));
        // NOTE: only a committed id is cached: made inside a transaction that rolls back, it
        // would name nothing; mailboxes are never removed, so a committed id stays true.
        if (PQtransactionStatus(c) == PQTRANS_IDLE) {
            std::lock_guard lock(ids_mutex_);
            ids_.emplace(std::string(name), id);
        }
        return id;
    }

    void forget_mailboxes() {
        std::lock_guard lock(ids_mutex_);
        ids_.clear();
    }

    // A front-end whose host dies releases its locks (and its listeners row) within seconds:
    // the server drops connection `c` after 5 + 3 x 2 s without an answer (over TCP; a Unix
    // socket cannot lose it).
    void keep_alive(PGconn* c) const {
        (void)exec(c, "SET tcp_keepalives_idle = 5");
        (void)exec(c, "SET tcp_keepalives_interval = 2");
        (void)exec(c, "SET tcp_keepalives_count = 3");
    }

    // ---- events ---------------------------------------------------------------------------

    // The NOTIFY channel: one per schema, so two stores in one database never mix.
    std::string channel() const { return o_.schema + "_events"; }

    // Starts the listener and waits (up to the wait time) until it listens.
    void start_listener() {
        std::unique_lock lock(events_mutex_);
        if (!listener_.joinable()) {
            wake_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
            listener_ = std::thread([self = this] { self->listen_loop(); });
        }
        // A subscriber that goes on before the LISTEN is in place may miss what happens
        // meanwhile: the LISTEN, when it comes, tells it to look again.
        if (!events_cv_.wait_for(lock, o_.wait, [&] { return listening_ || stopping_; })) listen_late_ = true;
    }

    void stop_listener() noexcept {
        {
            std::lock_guard lock(events_mutex_);
            stopping_ = true;
        }
        events_cv_.notify_all();
        if (wake_ >= 0) {
            const std::uint64_t one = 1;
            (void)!::write(wake_, &one, sizeof one);
        }
        if (listener_.joinable()) listener_.join();
        if (wake_ >= 0) ::close(wake_);
        wake_ = -1;
    }

    // Whether a commit now should wait for its own events to be told: someone subscribed and
    // the listener is connected.
    bool should_wait_for_events() {
        if (!hub_->has_subscribers()) return false;
        std::lock_guard lock(events_mutex_);
        return listening_;
    }

    std::uint64_t next_marker() { return marker_.fetch_add(1, std::memory_order_relaxed) + 1; }

    // Waits until the listener has told the events of the transaction that sent `marker`;
    // false if it has not (no marker sent, the listener down, 2 s passed): the caller tells
    // its own events then, or nobody would (none when nobody listens).
    bool wait_for_marker(std::uint64_t marker) {
        if (!hub_->has_subscribers()) return true;
        if (marker == 0) return false;
        std::unique_lock lock(events_mutex_);
        events_cv_.wait_for(lock, event_wait, [&] { return seen_markers_.contains(marker) || !listening_ || stopping_; });
        if (seen_markers_.erase(marker) == 1) return true;
        log(log_level::warning, "postgresql: the events of a commit were not heard back; told by the committer");
        if (listening_) probe_events_ = true;  // the event connection may have stopped relaying (serve)
        return false;
    }

    void publish(store_event e) { hub_->publish(std::move(e)); }

    enum class fate { committed, aborted, unknown };

    // What became of transaction `xid` whose COMMIT's answer was lost, `token` the one its row
    // in @.deliveries has: asked on new connections (pooled ones likely died with it) until the
    // server says, at most 30 s (a COMMIT may still be waiting for its WAL flush or a standby).
    // The transaction's status first, then its row: a server that crashed before the
    // transaction's WAL was durable hands its id out again, so "committed" may be another
    // transaction's; only the row, looked for once the status is final, says it was ours. The
    // row, not a body: POP3 may have fetched and deleted the messages meanwhile, and nothing
    // but the day's prune removes it (a transaction's deliveries commit together: one row
    // answers for each of them). An id beyond the server's next one ("in the future": handed
    // out before a crash, never durable) did not commit.
    fate transaction_fate(const std::string& xid, const std::string& token) {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
        // Each call under what is left of the 30 s (at least a second), so that a server that
        // stops answering meanwhile holds the answer up for 30 s and one connect at most, not
        // for a call_timeout or two past them.
        auto left = [&] {
            return std::max<std::chrono::milliseconds>(
                std::chrono::seconds(1),
                std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()));
        };
        while (std::chrono::steady_clock::now() < deadline) {
            if (auto c = connect("pool")) {
                // "future": at or past the id this query is given, the next one handed out.
                // "settled": before every running transaction's (its commit is visible to new
                // snapshots; a COMMIT that waits for a synchronous standby is "committed" in the
                // commit log before it is).
                auto r = exec(c->get(),
                              "SELECT CASE WHEN $1::xid8 >= pg_current_xact_id() THEN 'future' "
                              "ELSE pg_xact_status($1::xid8) END, $1::xid8 < pg_snapshot_xmin(pg_current_snapshot())",
                              {{xid}}, false, left());
                if (r && PQntuples(r->get()) == 1) {
                    const bool too_old = PQgetisnull(r->get(), 0, 0);
                    const std::string_view st = too_old ? std::string_view() : PQgetvalue(r->get(), 0, 0);
                    const bool settled = std::string_view(PQgetvalue(r->get(), 0, 1)) == "t";
                    if (st == "future" || st == "aborted") return fate::aborted;
                    if (st == "committed" || too_old) {
                        // Its own budget: the status is final, and this answer decides between a
                        // 250 and a 451 that a retry would turn into a duplicate.
                        auto b = exec(c->get(), sql("SELECT EXISTS (SELECT 1 FROM @.deliveries WHERE token = $1)"), {{token}},
                                      false, std::chrono::seconds(10));
                        if (b && PQntuples(b->get()) == 1) {
                            if (std::string_view(PQgetvalue(b->get(), 0, 0)) == "t") return fate::committed;
                            // No row once every snapshot would see it: the id is another
                            // transaction's now (ours lost in a crash).
                            if (settled || too_old) return fate::aborted;
                        }
                    }
                }
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(200));
        }
        log(log_level::error, "postgresql: the fate of transaction " + xid +
                                  " is unknown: its messages were answered with a temporary failure and may be stored (a retry may duplicate them)");
        return fate::unknown;
    }

    // The notifications a transaction sends: "D front-end id octets hexname", "X front-end id
    // hexname" (each only while some front-end listens) and, last, "E front-end marker" when
    // the committer waits for them (only a listening front-end does, so always).
    result<void> notify(PGconn* c, std::string_view payload) {
        const std::string ch = channel();
        if (auto r = exec(c, "SELECT pg_notify($1, $2)", {{ch}, {payload}}); !r) return unexpected(r.error());
        return {};
    }

    // "X" for each of `ids` (a PostgreSQL array, in order) in `mailbox`, in one statement.
    result<void> notify_deleted(PGconn* c, std::string_view mailbox, const std::string& ids) {
        const std::string ch = channel(), name = hex(mailbox);
        if (auto r = exec(c, sql("SELECT pg_notify($1, 'X ' || $2 || ' ' || u.x || ' ' || $3) "
                                 "FROM unnest($4::bigint[]) WITH ORDINALITY AS u(x, o) "
                                 "WHERE EXISTS (SELECT 1 FROM @.listeners) ORDER BY u.o"),
                          {{ch}, {front_end_}, {name}, {ids}});
            !r)
            return unexpected(r.error());
        return {};
    }

private:
    static std::string one_line(const char* s) {
        std::string out(s ? s : "");
        std::replace(out.begin(), out.end(), '\n', ' ');
        while (!out.empty() && out.back() == ' ') out.pop_back();
        return out;
    }

    void log(log_level level, const std::string& text) const {
        if (o_.log) o_.log(level, text);
    }

    void listen_loop() {
        bool reported = false;
        bool gap = false;  // an attempt failed or a LISTEN was lost: a new one follows a gap
        while (true) {
            {
                std::lock_guard lock(events_mutex_);
                if (stopping_) return;
            }
            auto c = connect("events");
            bool pending = false;  // enlist()'s wait gave up: a resync follows once it succeeds
            if (c && exec(c->get(), "LISTEN \"" + channel() + "\"") && enlist(c->get(), pending)) {
                if (reported) log(log_level::info, "postgresql: listening for events again");
                reported = false;
                bool late = false;
                {
                    std::lock_guard lock(events_mutex_);
                    listening_ = true;
                    late = std::exchange(listen_late_, false);
                }
                events_cv_.notify_all();
                // What other front-ends did while no LISTEN was in place was told to nobody:
                // the subscribers look at the store again (after the LISTEN, so no gap).
                if (gap || late) hub_->publish({store_event::kind::resync, {}, {}, 0, 0});
                serve(c->get(), pending);
                {
                    std::lock_guard lock(events_mutex_);
                    listening_ = false;
                }
                events_cv_.notify_all();
            }
            gap = true;
            std::unique_lock lock(events_mutex_);
            if (stopping_) return;
            if (!reported) {
                log(log_level::error, "postgresql: the event connection is lost; events of other front-ends are missed until it is back (then subscribers are told to look again)");
                reported = true;
            }
            events_cv_.wait_for(lock, reconnect_pause, [&] { return stopping_; });
        }
    }

    // Enters this front-end in the listeners table (on its LISTENing connection `c`, so the
    // row names a live server process), then waits for every transaction that may have looked
    // at the table before the row came: one that found it empty sent no NOTIFY, and must be
    // over before the subscribers look at the store. False if the connection failed; `pending`
    // if that wait gave up (a long transaction): serve() then tries again and has the
    // subscribers look again once it succeeds.
    bool enlist(PGconn* c, bool& pending) {
        keep_alive(c);
        const bool entered = exec(c, sql("INSERT INTO @.listeners (pid, front_end) VALUES (pg_backend_pid(), $1) "
                                         "ON CONFLICT (pid) DO UPDATE SET front_end = EXCLUDED.front_end, since = now()"),
                                  {{front_end_}}) &&
                             exec(c, sql("DELETE FROM @.listeners WHERE front_end = $1 AND pid <> pg_backend_pid()"),
                                  {{front_end_}}) &&
                             exec(c, sql(drop_gone_listeners));
        drain(c);
        if (!entered) return false;
        const barrier b = wait_for_readers(c, listen_barrier);
        drain(c);
        if (b == barrier::failed) return false;
        pending = b == barrier::timed_out;
        return true;
    }

    enum class barrier { passed, timed_out, failed };

    // Takes the listeners table's ACCESS EXCLUSIVE lock and lets it go at once: every
    // statement that reads the table holds ACCESS SHARE until its transaction is over (and
    // visible), so once it is granted, every transaction that read the table before is done.
    // Those that come meanwhile wait for it (a few milliseconds, once per LISTEN); `timeout`
    // bounds that (lock_timeout: a transaction that stays gives timed_out).
    // NOTE: a snapshot's running transactions would not do: one with an id above the
    // snapshot's xmax (no newer one finished yet) is not in its list; and they are the whole
    // server's, not only those that read this table.
    barrier wait_for_readers(PGconn* c, std::chrono::milliseconds timeout) {
        // Under call_timeout as every other call: a server that stops answering here would
        // otherwise hold the event thread, and the store's shutdown that joins it, for ever.
        const auto deadline = watch(c);
        auto run = [&](const std::string& q) { return pg_result(PQexec(c, q.c_str())); };
        auto ok = [](const pg_result& r) { return r && PQresultStatus(r.get()) == PGRES_COMMAND_OK; };
        if (!ok(run("BEGIN"))) return barrier::failed;
        pg_result locked;
        if (ok(run("SET LOCAL lock_timeout = " + std::to_string(timeout.count()))))
            locked = run(sql("LOCK TABLE @.listeners IN ACCESS EXCLUSIVE MODE"));
        if (ok(locked)) return ok(run("COMMIT")) ? barrier::passed : barrier::failed;
        const char* state = locked ? PQresultErrorField(locked.get(), PG_DIAG_SQLSTATE) : nullptr;
        const bool timed_out = state && std::string_view(state) == "55P03";  // lock_not_available
        if (!timed_out && locked) (void)checked(c, std::move(locked));  // logs why
        if (!ok(run("ROLLBACK"))) return barrier::failed;
        return timed_out ? barrier::timed_out : barrier::failed;
    }

    // Tells the notifications libpq has read (a query on the LISTENing connection reads
    // those that came meanwhile into its queue, where the socket no longer shows them).
    void drain(PGconn* c) {
        if (PQconsumeInput(c) == 0) return;
        while (PGnotify* note = PQnotifies(c)) {
            handle(note->extra ? note->extra : "");
            PQfreemem(note);
        }
    }

    // Tells every notification until the connection breaks or the store stops (which takes
    // this front-end out of the listeners table). `pending`: see enlist(); tried again with a
    // short wait (others' deliveries wait behind it), at growing intervals.
    void serve(PGconn* c, bool pending) {
        auto last_try = std::chrono::steady_clock::now();
        auto last_heard = last_try;
        std::chrono::steady_clock::duration retry_after = listen_retry_first;
        while (true) {
            pollfd fds[2] = {{PQsocket(c), POLLIN, 0}, {wake_, POLLIN, 0}};
            const int n = ::poll(fds, 2, 1000);
            if (n < 0 && errno != EINTR) return;
            {
                std::lock_guard lock(events_mutex_);
                if (stopping_) break;
            }
            if (n > 0 && (fds[0].revents & POLLIN) != 0) last_heard = std::chrono::steady_clock::now();
            // A connection that silently stopped relaying (a stuck proxy or pooler: TCP stays
            // up, so keepalives never end it) would miss every other front-end's events for
            // ever: after call_timeout (75 s if none) without a word, or at once when this front-end's own
            // commit was not heard back (wait_for_marker), a query asks whether it still
            // answers (within events_probe_limit); one that does not is cut, and a new
            // connection follows (the subscribers then look at the store again).
            const auto quiet = o_.call_timeout.count() > 0 ? o_.call_timeout : std::chrono::milliseconds(75000);
            if (probe_events_.exchange(false) || std::chrono::steady_clock::now() - last_heard >= quiet) {
                if (!exec(c, "SELECT 1", {}, false, events_probe_limit)) return;
                last_heard = std::chrono::steady_clock::now();
            }
            if (pending && std::chrono::steady_clock::now() - last_try >= retry_after) {
                last_try = std::chrono::steady_clock::now();
                retry_after = std::min<std::chrono::steady_clock::duration>(2 * retry_after, listen_retry_most);
                const barrier b = wait_for_readers(c, listen_barrier_retry);
                if (b == barrier::failed) return;
                if (b == barrier::passed) {
                    drain(c);  // what came before the subscribers look again
                    pending = false;
                    hub_->publish({store_event::kind::resync, {}, {}, 0, 0});
                }
            }
            drain(c);
            if (PQstatus(c) != CONNECTION_OK) return;
        }
        leave(c);
    }

    // Takes this front-end's row out of the listeners table as the store stops, waiting at
    // most a second for the answer: a server that vanished must not hold up the shutdown (the
    // row is then dropped by the next start or LISTEN of any front-end).
    void leave(PGconn* c) {
        const std::string q = sql("DELETE FROM @.listeners WHERE pid = pg_backend_pid()");
        if (PQsendQuery(c, q.c_str()) != 1) return;
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
        while (PQisBusy(c)) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0) return;
            pollfd fd{PQsocket(c), POLLIN, 0};
            if (::poll(&fd, 1, static_cast<int>(left.count())) < 0 && errno != EINTR) return;
            if (PQconsumeInput(c) == 0) return;
        }
        while (PGresult* r = PQgetResult(c)) PQclear(r);
    }

    void handle(std::string_view payload) {
        std::vector<std::string_view> f;
        while (!payload.empty()) {
            const auto sp = payload.find(' ');
            f.push_back(payload.substr(0, sp));
            if (sp == std::string_view::npos) break;
            payload.remove_prefix(sp + 1);
        }
        if (f.size() == 5 && f[0] == "D") {
            auto name = unhex(f[4]);
            if (!name) return;
            hub_->publish({store_event::kind::delivered, std::move(*name), std::string(f[2]),
                           std::strtoull(std::string(f[3]).c_str(), nullptr, 10), 0});
        } else if (f.size() == 4 && f[0] == "X") {
            auto name = unhex(f[3]);
            if (!name) return;
            hub_->publish({store_event::kind::deleted, std::move(*name), std::string(f[2]), 0, 0});
        } else if (f.size() == 3 && f[0] == "E" && f[1] == front_end_) {
            {
                std::lock_guard lock(events_mutex_);
                seen_markers_.insert(std::strtoull(std::string(f[2]).c_str(), nullptr, 10));
                // A waiter that gave up leaves its marker: keep the set small.
                while (seen_markers_.size() > 1024) seen_markers_.erase(seen_markers_.begin());
            }
            events_cv_.notify_all();
        }
    }

    postgresql_options o_;
    std::shared_ptr<event_hub> hub_;
    mutable std::atomic<bool> unreachable_{false};  // a connection attempt failed, none succeeded since
    const std::string front_end_;  // tells this store's own markers from other front-ends'
    std::vector<std::string> texts_;  // each of `statements` with its schema
    std::string uri_options_;         // the URI's own options= (connect() gives them after ours)
    std::vector<std::string> names_;  // their prepared names: the statement's and the schema

    std::mutex pool_mutex_;
    std::condition_variable pool_cv_;
    std::vector<connection> idle_;  // under pool_mutex_
    std::size_t open_ = 0;       // connections taken or idle, under pool_mutex_

    std::mutex ids_mutex_;
    std::map<std::string, long long, std::less<>> ids_;  // mailbox name -> id, committed only

    std::mutex events_mutex_;
    std::condition_variable events_cv_;
    std::thread listener_;
    std::atomic<std::uint64_t> cuts_{0};  // calls the watchdog cut
    std::atomic<bool> probe_events_{false};  // a commit's events were not heard back: serve() asks
    mutable call_watchdog watchdog_;  // declared after what its guards use; joined first
    int wake_ = -1;
    bool listening_ = false;  // under events_mutex_
    bool stopping_ = false;   // under events_mutex_
    bool listen_late_ = false;  // under events_mutex_: a subscriber stopped waiting for the LISTEN
    std::set<std::uint64_t> seen_markers_;  // under events_mutex_
    std::atomic<std::uint64_t> marker_{0};
};

// ---- message source ---------------------------------------------------------------------

// A body read chunk by chunk, each with a pooled connection taken for that read only, so a
// slow client holds no database connection and a 50 MiB message never sits whole in memory.
class chunk_source final : public message_source {
public:
    // `first`: piece 0, fetched with the message's row.
    chunk_source(std::shared_ptr<database> db, std::string body, std::uint64_t octets, std::string first)
        : db_(std::move(db)), body_(std::move(body)), octets_(octets), chunk_(std::move(first)), next_(1) {}

    result<std::size_t> read(std::span<char> buf) override {
        if (offset_ >= octets_ || buf.empty()) return std::size_t{0};
        if (pos_ >= chunk_.size()) {
            const std::string n = std::to_string(next_);
            auto r = db_->with_retry([&](connection& c) { return db_->run(c, statement::read_chunk, {{body_}, {n}}, true); });
            if (!r) return unexpected(r.error());
            if (PQntuples(r->get()) != 1) return unexpected(errc::not_found);  // deleted meanwhile
            chunk_.assign(PQgetvalue(r->get(), 0, 0), static_cast<std::size_t>(PQgetlength(r->get(), 0, 0)));
            if (chunk_.empty()) return unexpected(errc::io_error);
            pos_ = 0;
            ++next_;
        }
        const std::size_t n = std::min({buf.size(), chunk_.size() - pos_, static_cast<std::size_t>(octets_ - offset_)});
        std::memcpy(buf.data(), chunk_.data() + pos_, n);
        pos_ += n;
        offset_ += n;
        return n;
    }

    result<void> rewind() override {
        offset_ = 0;
        pos_ = 0;
        if (next_ != 1) {  // else the first piece is still here
            chunk_.clear();
            next_ = 0;
        }
        return {};
    }

private:
    std::shared_ptr<database> db_;
    std::string body_;
    std::uint64_t octets_;
    std::uint64_t offset_ = 0;
    std::string chunk_;
    std::size_t pos_ = 0;
    long long next_ = 0;  // the chunk to fetch next
};

// ---- delivery ---------------------------------------------------------------------------

class pg_delivery;

// Group commit: a committer that finds fewer than max_running batches under way takes every
// delivery waiting (up to max_batch) into one transaction; the others wait for it. One COMMIT
// (one WAL flush) answers them all; a delivery that fails sends the batch's others back to be
// tried one by one, so it spoils none of them.
class committer {
public:
    explicit committer(std::shared_ptr<database> db) : db_(std::move(db)) {}
    result<void> commit(pg_delivery& d);
    /// Several deliveries at once (commit_together: a server's committer thread), each with its
    /// own result: they join the waiting ones, and this caller leads batches or waits until
    /// every one of them is done.
    void commit_all(std::span<pg_delivery* const> ds, std::span<result<void>> results);

private:
    struct job {
        pg_delivery* d;
        std::error_code result;
        bool done = false;
        bool committed = false;       // its transaction committed: stored, whatever comes after
        const void* owner = nullptr;  // the commit_all() call it belongs to
    };
    using box_map = std::map<std::string, std::string, std::less<>>;  // mailbox name -> id
    // A committed transaction whose events are still to be heard back (or told).
    struct committed {
        std::uint64_t marker;
        std::vector<job*> jobs;
    };
    void run(std::vector<job*>& batch, std::vector<committed>& to_tell);
    void tell(const std::vector<committed>& to_tell);
    std::error_code send_batch(connection& c, const std::vector<job*>& batch, const box_map& box_ids,
                               std::uint64_t marker, std::string& xid, std::string& token);
    // Whether a transaction just committed is followed by a prune of @.deliveries: one at a
    // time, at most every prune_every, or at once again while the last one left rows behind.
    bool prune_due() {
        const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
        auto at = prune_at_.load();
        return now >= at &&
               prune_at_.compare_exchange_strong(
                   at, now + std::chrono::duration_cast<std::chrono::steady_clock::duration>(prune_every).count());
    }

    std::shared_ptr<database> db_;
    std::mutex mutex_;
    std::condition_variable cv_;
    std::deque<job*> waiting_;
    std::size_t running_ = 0;        // batches in their transaction now (max_running, see large_)
    std::size_t running_large_ = 0;  // of them, batches of large_batch_octets or more
    std::atomic<std::uint64_t> transactions_{0};  // numbers the tokens of this front-end's transactions
    std::atomic<std::chrono::steady_clock::rep> prune_at_{0};  // prune_due()
    // After a delivery's call was cut for want of an answer (a server or pooler that stopped
    // answering): until then, batches fail at once (451) instead of each connecting (a stuck
    // pooler takes the login) and waiting out a call_timeout of its own, one after the other.
    std::atomic<std::chrono::steady_clock::rep> paused_until_{0};
};

class pg_delivery final : public delivery {
public:
    pg_delivery(std::shared_ptr<database> db, std::shared_ptr<committer> c, std::vector<std::string> targets)
        : db_(std::move(db)), committer_(std::move(c)), targets_(std::move(targets)),
          name_(db_->front_end().substr(0, 12) + "." + std::to_string(next_number())) {}
    ~pg_delivery() override { abort(); }

    result<void> write(std::string_view octets) override {
        if (done_) return unexpected(errc::bad_input);
        wire_.add(octets);
        stored_ += octets.size();
        if (spool_.get() < 0 && memory_.size() + octets.size() <= in_memory_octets) {
            memory_.append(octets);
            return {};
        }
        if (spool_.get() < 0) {
            spool_.reset(posix::open_unnamed_temp_file());
            if (spool_.get() < 0) return unexpected(last_system_error());
            if (auto r = posix::write_all(spool_.get(), memory_); !r) return r;
            memory_.clear();
            memory_.shrink_to_fit();
        }
        return posix::write_all(spool_.get(), octets);
    }

    result<void> commit() override {
        if (done_) return unexpected(errc::bad_input);
        done_ = true;
        auto r = committer_->commit(*this);
        release();
        return r;
    }

    // commit_together(): the group goes to the committer at once (its batches, one
    // transaction at a time), for deliveries of this store none of them committed yet.
    bool commit_batch(std::span<delivery* const> batch, std::span<result<void>> results) override {
        std::vector<pg_delivery*> ds;
        ds.reserve(batch.size());
        for (delivery* b : batch) {
            auto* d = dynamic_cast<pg_delivery*>(b);
            if (d == nullptr || d->done_ || d->committer_ != committer_) return false;
            ds.push_back(d);
        }
        for (auto* d : ds) d->done_ = true;
        committer_->commit_all(ds, results);
        for (auto* d : ds) d->release();
        return true;
    }

    void abort() noexcept override {
        done_ = true;
        release();
    }

    std::string name() const override { return name_; }

    bool keep(std::string_view uidl, bool seen) override {
        // An all-digit UIDL could be another message's id, which is its UIDL (message_info).
        const bool valid = !uidl.empty() && uidl.size() <= 70 &&
                           std::all_of(uidl.begin(), uidl.end(), [](char c) { return c >= 0x21 && c <= 0x7e; }) &&
                           !std::all_of(uidl.begin(), uidl.end(), [](char c) { return c >= '0' && c <= '9'; });
        if (!valid || done_) return false;
        uidl_ = uidl;
        seen_ = seen;
        return true;
    }

    // For the committer.
    const std::string& uidl() const noexcept { return uidl_; }  // empty: the id is the UIDL
    bool seen() const noexcept { return seen_; }
    const std::vector<std::string>& targets() const noexcept { return targets_; }
    std::uint64_t stored_octets() const noexcept { return stored_; }
    std::uint64_t wire_octets() const noexcept { return wire_.octets(); }
    // Reads chunk `n` of the stored octets into `out`.
    result<void> chunk(std::uint64_t n, std::string& out) const {
        const std::uint64_t from = n * chunk_octets;
        const std::size_t len = static_cast<std::size_t>(std::min<std::uint64_t>(chunk_octets, stored_ - from));
        if (spool_.get() < 0) {
            out.assign(memory_, static_cast<std::size_t>(from), len);
            return {};
        }
        out.resize(len);
        std::size_t got = 0;
        while (got < len) {
            const ssize_t k = ::pread(spool_.get(), out.data() + got, len - got, static_cast<off_t>(from + got));
            if (k < 0 && errno == EINTR) continue;
            if (k <= 0) return unexpected(k < 0 ? last_system_error() : make_error_code(errc::io_error));
            got += static_cast<std::size_t>(k);
        }
        return {};
    }
    std::vector<std::string> ids;  // set by a successful commit: the message id per target

private:
    static std::uint64_t next_number() {
        static std::atomic<std::uint64_t> n{0};
        return n.fetch_add(1, std::memory_order_relaxed) + 1;
    }
    void release() noexcept {
        memory_.clear();
        memory_.shrink_to_fit();
        spool_.reset();
    }

    std::shared_ptr<database> db_;
    std::shared_ptr<committer> committer_;
    std::vector<std::string> targets_;
    std::string name_;
    std::string memory_;
    posix::unique_fd spool_;
    wire_size_counter wire_;
    std::uint64_t stored_ = 0;
    std::string uidl_;  // keep()
    bool seen_ = false;
    bool done_ = false;
};

result<void> committer::commit(pg_delivery& d) {
    pg_delivery* one[] = {&d};
    result<void> r[1];
    commit_all(one, r);
    return r[0];
}

void committer::commit_all(std::span<pg_delivery* const> ds, std::span<result<void>> results) {
    std::vector<job> mine(ds.size());
    for (std::size_t i = 0; i < ds.size(); ++i) {
        mine[i].d = ds[i];
        mine[i].owner = &mine;
    }
    auto all_done = [&] { return std::all_of(mine.begin(), mine.end(), [](const job& j) { return j.done; }); };
    std::vector<job*> batch;
    batch.reserve(max_batch);  // nothing allocated below while jobs are taken from waiting_
    std::unique_lock lock(mutex_);
    try {
        for (auto& j : mine) waiting_.push_back(&j);
    } catch (...) {
        // NOTE: none of these jobs may stay behind in waiting_ once `mine` is gone.
        std::erase_if(waiting_, [&](const job* j) { return j->owner == &mine; });
        throw;
    }
    while (!all_done()) {
        // Nothing waiting: this job is in a batch under way; wait for it. A second batch may
        // run only beside a large one (large_batch_octets).
        const bool room = running_ < max_running || (running_ == running_large_ && running_ < max_running + 1);
        if (!room || waiting_.empty()) {
            cv_.wait(lock);
            continue;
        }
        // NOTE: a delivery of large_batch_octets or more goes alone, in a batch its own caller
        // leads: a server's committer thread that took another caller's 20 MiB message into its
        // batch would hold every session's 250 behind it (smtpd commits such messages on the
        // pool for that reason), and a pool thread would hold the committer's small ones.
        batch.clear();
        std::uint64_t octets = 0;
        for (auto it = waiting_.begin(); it != waiting_.end() && batch.size() < max_batch;) {
            job* j = *it;
            const bool big = j->d->stored_octets() >= large_batch_octets;
            if (big && (j->owner != &mine || !batch.empty())) {
                ++it;
                continue;
            }
            octets += j->d->stored_octets();
            batch.push_back(j);
            it = waiting_.erase(it);
            if (big) break;
        }
        if (batch.empty()) {  // only other callers' large deliveries wait: they lead them
            cv_.wait(lock);
            continue;
        }
        const bool large = octets >= large_batch_octets;
        ++running_;
        running_large_ += large ? 1 : 0;
        lock.unlock();
        std::vector<committed> to_tell;
        auto give_up = [&] {
            // NOTE: an exception (bad_alloc) may come before or after COMMIT: a temporary
            // failure for each job not yet answered and not committed loses nothing, one
            // committed keeps its success (a 451 would have the client send it again, stored
            // twice), and the slot is freed, or every later delivery of this front-end would
            // wait for ever.
            for (job* j : batch)
                if (!j->result && !j->committed) j->result = make_error_code(errc::temporary_failure);
            to_tell.clear();
        };
        try {
            run(batch, to_tell);
        } catch (...) {
            give_up();
        }
        lock.lock();
        // The next batch may begin while this one's events come back through the listener.
        --running_;
        running_large_ -= large ? 1 : 0;
        cv_.notify_all();
        lock.unlock();
        try {
            tell(to_tell);
        } catch (...) {
            // Told by the listener then, or found by a resync: the deliveries stand.
        }
        lock.lock();
        for (job* j : batch) j->done = true;
        cv_.notify_all();
    }
    for (std::size_t i = 0; i < mine.size(); ++i) results[i] = mine[i].result ? result<void>(unexpected(mine[i].result)) : result<void>();
}

void committer::run(std::vector<job*>& batch, std::vector<committed>& to_tell) {
    auto fail_all = [&](std::error_code e) {
        for (job* j : batch) j->result = e;
    };
    const auto now = [] { return std::chrono::steady_clock::now().time_since_epoch().count(); };
    if (now() < paused_until_.load()) return fail_all(make_error_code(errc::temporary_failure));
    auto l = db_->take();
    if (!l) return fail_all(l.error());
    const auto cut_before = db_->cuts();
    // A call cut for want of an answer: a server that stopped answering. Nothing is stored (no
    // COMMIT was sent); tried again, on any connection, each delivery would wait out a
    // deadline of its own, and so would the batches queued behind (paused_until_).
    // NOTE: cuts() counts every call's cut: one elsewhere at the same moment also pauses.
    auto cut = [&] {
        if (db_->cuts() == cut_before) return false;
        paused_until_.store(now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(reconnect_pause).count());
        { auto dead = std::move(*l); }
        fail_all(make_error_code(errc::temporary_failure));
        return true;
    };
    // The mailboxes first, each made in a statement of its own (committed at once), in name
    // order: two batches making the same new mailboxes inside their transactions would wait
    // for each other's uncommitted rows and deadlock. A mailbox made for a delivery that then
    // fails stays, empty, as a Maildir directory would.
    box_map box_ids;
    for (job* j : batch)
        for (const auto& t : j->d->targets()) box_ids.emplace(t, std::string());
    for (auto& [name, id] : box_ids) {
        auto made = db_->mailbox_id(l->get(), name, true);
        if (!made && cut()) return;
        if (!made && PQstatus(l->get()) == CONNECTION_BAD) {
            // A connection lost while idle (a restarted server): nothing was done, take a new one
            // (the dead one given back first, so it does not hold a place in a full pool).
            { auto dead = std::move(*l); }
            l = db_->take();
            if (!l) return fail_all(l.error());
            made = db_->mailbox_id(l->get(), name, true);
        }
        if (!made) return fail_all(made.error());
        id = std::to_string(*made);
    }
    const std::uint64_t marker = db_->should_wait_for_events() ? db_->next_marker() : 0;
    std::string xid, token;
    const std::uint32_t forgets = l->conn().forgotten;
    std::error_code e = send_batch(l->conn(), batch, box_ids, marker, xid, token);
    if (e && PQstatus(l->get()) == CONNECTION_OK && l->conn().forgotten != forgets) {
        // The server forgot our prepared statements (26000: a pooler's DISCARD ALL): nothing
        // is stored; rolled back, they are prepared again and the batch sent once more.
        if (PQpipelineStatus(l->get()) == PQ_PIPELINE_OFF && db_->exec(l->get(), "ROLLBACK")) {
            xid.clear();
            e = send_batch(l->conn(), batch, box_ids, marker, xid, token);
        }
    }
    if (e && cut()) return;
    if (e && PQstatus(l->get()) == CONNECTION_BAD) {
        // A connection lost (most likely while idle: a restarted server) before any COMMIT
        // was sent: nothing is stored; the batch again on a new one.
        { auto dead = std::move(*l); }
        xid.clear();
        l = db_->take();
        if (!l) return fail_all(l.error());
        e = send_batch(l->conn(), batch, box_ids, marker, xid, token);
        if (e && cut()) return;
    }
    if (e) {
        // Rolled back; a connection left in pipeline mode (a broken flight) is dropped instead,
        // which rolls back on the server.
        if (PQpipelineStatus(l->get()) == PQ_PIPELINE_OFF)
            (void)db_->exec(l->get(), "ROLLBACK");
        else
            { auto dead = std::move(*l); }
        if (batch.size() == 1) {
            batch[0]->result = e;
            batch[0]->d->ids.clear();
            db_->forget_mailboxes();  // an id removed behind our back is looked up afresh next time
            return;
        }
        // Which one failed, and whether it was the connection, is for the retries to tell. No
        // SAVEPOINT per delivery (more statements each): the batch is rolled back and each
        // delivery tried alone.
        { auto give_back = std::move(*l); }  // the retries take connections of their own
        for (job* one : batch) {
            std::vector<job*> alone{one};
            run(alone, to_tell);
        }
        return;
    }
    auto committed = db_->exec(l->get(), "COMMIT");
    if (!committed) {
        // The answer was lost, not necessarily the transaction (it may even still be under
        // way): ask the server what became of it, so that a 451 is only given for what is not
        // stored and a retry never duplicates.
        const auto fate = db_->transaction_fate(xid, token);
        if (fate != database::fate::committed) {
            fail_all(make_error_code(errc::temporary_failure));
            return;
        }
    }
    for (job* j : batch) j->committed = true;  // nothing after this may turn them into a 451
    if (committed && prune_due()) {
        // Old rows of @.deliveries, after the COMMIT and in a statement of its own: a prune that
        // fails (a role without DELETE on it, a timeout) never takes deliveries down with it.
        // One round trip a minute.
        auto pruned = db_->exec(l->get(), db_->sql(prune_deliveries));
        if (!pruned)
            db_->options().log(log_level::warning, "postgresql: pruning mailnet.deliveries failed: " + pruned.error().message());
        else if (std::atoi(PQcmdTuples(pruned->get())) >= prune_most)
            prune_at_.store(0);  // more left: the next transaction goes on
    }
    to_tell.push_back({marker, batch});
}

// Each transaction's events are told through NOTIFY by the listener, in commit order; if that
// did not happen in time (the event connection down), they are told here, so this front-end's
// subscribers miss nothing of its own. Before the deliveries are answered.
void committer::tell(const std::vector<committed>& to_tell) {
    for (const auto& t : to_tell) {
        if (db_->wait_for_marker(t.marker)) continue;
        for (job* j : t.jobs)
            if (!j->result)
                for (std::size_t i = 0; i < j->d->ids.size(); ++i)
                    db_->publish({store_event::kind::delivered, j->d->targets()[i], j->d->ids[i], j->d->wire_octets(), 0});
    }
}


// The batch's transaction but its COMMIT, in one flight (libpq's pipeline mode): BEGIN, the
// transaction's row and id (`token`, `xid`: read before COMMIT is sent, so that if COMMIT's
// answer is lost, pg_xact_status and the row tell what became of it), each delivery's
// statement and further pieces, the marker's NOTIFY; then
// every answer, in order. The first failure, if any: the caller then rolls back.
// NOTE: no deadlock with the server's answers while this writes: libpq reads them into its
// buffer whenever a write would block.
std::error_code committer::send_batch(connection& c, const std::vector<job*>& batch, const box_map& box_ids,
                                      std::uint64_t marker, std::string& xid, std::string& token) {
    const auto temporary = make_error_code(errc::temporary_failure);
    // A new one each time: a transaction sent again after a lost connection must not wait on
    // the unique row of one the server may not have rolled back yet.
    token = db_->front_end() + "." + std::to_string(transactions_.fetch_add(1, std::memory_order_relaxed) + 1);
    // Prepared outside the transaction (a failed PREPARE would abort it); sent unprepared if not.
    // Deliveries of one piece each go in one statement when there are several; the others
    // (and a lone one) each in their own, with their further pieces.
    std::vector<pg_delivery*> many, single;
    for (job* j : batch) (j->d->stored_octets() <= chunk_octets ? many : single).push_back(j->d);
    if (many.size() < 2) {
        single.insert(single.begin(), many.begin(), many.end());
        many.clear();
    }
    (void)db_->prepare(c, statement::deliver);
    (void)db_->prepare(c, statement::xid);
    (void)db_->prepare(c, statement::more_chunk);
    if (!many.empty()) (void)db_->prepare(c, statement::deliver_many);
    if (PQstatus(c) != CONNECTION_OK || PQenterPipelineMode(c) != 1) return temporary;
    const auto deadline = db_->watch(c);  // the whole flight: the sends and every answer
    enum class what { begin, xid, deliver, deliver_many, more, marker };
    struct sent_statement {
        what w;
        pg_delivery* d;
    };
    std::vector<sent_statement> sent;
    std::error_code first;  // the first failure
    auto note = [&](std::error_code e) {
        if (!first) first = e;
    };
    auto queue = [&](bool ok, what w, pg_delivery* d = nullptr) {
        if (ok) sent.push_back({w, d});
        else note(temporary);
        return ok;
    };
    bool ok = queue(db_->send(c, "BEGIN", {}), what::begin) &&
              queue(db_->send(c, statement::xid, {{token}}), what::xid);
    const std::string channel = db_->channel();
    std::string chunk;
    auto boxes_of = [&](const pg_delivery& d) {
        std::string boxes = "{";
        for (const auto& t : d.targets()) boxes += (boxes.size() > 1 ? "," : "") + box_ids.find(t)->second;
        return boxes + "}";
    };
    if (ok && !many.empty()) {
        std::vector<std::string> tokens, stored, wire, boxes, uidls, seen;
        bytea_array data(many.size());
        for (pg_delivery* d : many) {
            d->ids.clear();
            tokens.push_back(d->name());
            stored.push_back(std::to_string(d->stored_octets()));
            wire.push_back(std::to_string(d->wire_octets()));
            if (auto r = d->chunk(0, chunk); !r) {
                note(r.error());
                ok = false;
                break;
            }
            data.add(chunk);
            boxes.push_back(boxes_of(*d));
            uidls.push_back(d->uidl());
            seen.push_back(d->seen() ? "t" : "f");
        }
        if (ok) {
            ok = queue(db_->send(c, statement::deliver_many,
                                 {{array_literal(tokens)}, {array_literal(stored)}, {array_literal(wire)}, {data.octets(), true},
                                  {array_literal(boxes)}, {channel}, {db_->front_end()}, {array_literal(uidls)},
                                  {array_literal(seen)}}),
                       what::deliver_many);
        }
    }
    for (std::size_t i = 0; ok && i < single.size(); ++i) {
        pg_delivery& d = *single[i];
        d.ids.clear();
        const std::string token = d.name(), octets = std::to_string(d.stored_octets()), wire = std::to_string(d.wire_octets());
        const std::string boxes = boxes_of(d);
        if (auto r = d.chunk(0, chunk); !r) {
            note(r.error());
            break;
        }
        ok = queue(db_->send(c, statement::deliver,
                             {{token}, {octets}, {wire}, {chunk, true}, {boxes}, {channel}, {db_->front_end()},
                              {d.uidl()}, {d.seen() ? "t" : "f"}}),
                   what::deliver, &d);
        const std::uint64_t chunks = (d.stored_octets() + chunk_octets - 1) / chunk_octets;
        for (std::uint64_t n = 1; ok && n < chunks; ++n) {
            if (auto r = d.chunk(n, chunk); !r) {
                note(r.error());
                ok = false;
                break;
            }
            ok = queue(db_->send(c, statement::more_chunk, {{token}, {std::to_string(n)}, {chunk, true}}), what::more, &d);
        }
    }
    if (ok && !first && marker)
        queue(db_->send(c, "SELECT pg_notify($1, $2)", {{channel}, {"E " + db_->front_end() + " " + std::to_string(marker)}}),
              what::marker);
    if (PQpipelineSync(c) != 1) note(temporary);
    bool lost = false;
    for (const auto& st : sent) {
        pg_result r(PQgetResult(c));
        if (!r || PQstatus(c) == CONNECTION_BAD) {  // the connection is gone: no more answers
            if (r) (void)db_->checked(c, std::move(r));  // logs it
            note(temporary);
            lost = true;
            break;
        }
        // Each statement's answer ends with a NULL (a statement after a failure is answered
        // PGRES_PIPELINE_ABORTED, and a NULL).
        if (PGresult* extra = PQgetResult(c)) {
            PQclear(extra);
            note(temporary);
            lost = true;
            break;
        }
        if (PQresultStatus(r.get()) == PGRES_PIPELINE_ABORTED) {
            note(temporary);
            continue;
        }
        database::forget_if_unprepared(c, r.get());
        auto answer = db_->checked(c, std::move(r));
        if (!answer) {
            note(answer.error());
            continue;
        }
        PGresult* a = answer->get();
        if (st.w == what::xid) {
            xid = PQgetvalue(a, 0, 0);
        } else if (st.w == what::deliver) {
            pg_delivery& d = *st.d;
            if (PQntuples(a) != static_cast<int>(d.targets().size())) {
                note(make_error_code(errc::io_error));
                continue;
            }
            std::map<std::string, std::string, std::less<>> by_box;  // mailbox id -> message id
            for (int i = 0; i < PQntuples(a); ++i) by_box.emplace(PQgetvalue(a, i, 2), PQgetvalue(a, i, 1));
            for (const auto& t : d.targets()) d.ids.push_back(by_box[box_ids.find(t)->second]);
        } else if (st.w == what::deliver_many) {
            // token -> (mailbox id -> message id), then each delivery's ids in its targets' order.
            std::map<std::string, std::map<std::string, std::string>, std::less<>> by_token;
            for (int i = 0; i < PQntuples(a); ++i) by_token[PQgetvalue(a, i, 0)].emplace(PQgetvalue(a, i, 3), PQgetvalue(a, i, 2));
            bool whole = by_token.size() == many.size();
            for (pg_delivery* d : many) {
                auto it = by_token.find(d->name());
                if (!whole || it == by_token.end() || it->second.size() != d->targets().size()) {
                    whole = false;
                    break;
                }
                for (const auto& t : d->targets()) d->ids.push_back(it->second[box_ids.find(t)->second]);
            }
            if (!whole) note(make_error_code(errc::io_error));
        } else if (st.w == what::more && std::string_view(PQcmdTuples(a)) != "1") {
            note(make_error_code(errc::io_error));
        }
    }
    if (!lost) {
        pg_result sync(PQgetResult(c));
        if (!sync || PQresultStatus(sync.get()) != PGRES_PIPELINE_SYNC) note(temporary);
    }
    // Left in pipeline mode (answers unread), the connection is dropped when given back.
    if (PQexitPipelineMode(c) != 1) note(temporary);
    if (!first && xid.empty()) note(temporary);
    return first;
}

// ---- the store --------------------------------------------------------------------------

class postgresql_store final : public store {
public:
    explicit postgresql_store(postgresql_options o)
        : db_(std::make_shared<database>(std::move(o), events())), committer_(std::make_shared<committer>(db_)) {}

    ~postgresql_store() override { db_->stop_listener(); }

    // The lock connection is made by the first lock() (smtpd never needs one).
    result<void> open() { return db_->migrate(); }

    result<void> lock(std::string_view mailbox) override {
        if (mailbox.empty()) return unexpected(errc::bad_input);
        std::lock_guard lock(lock_mutex_);
        if (locked_.contains(mailbox)) return unexpected(errc::mailbox_in_use);
        const std::string key = std::to_string(lock_key(db_->options().schema, mailbox));
        const std::string fence = std::to_string(fence_key(mailbox));
        result<pg_result> r = unexpected(errc::temporary_failure);
        for (int attempt = 0; attempt < 2; ++attempt) {
            // A connection lost since its last use is found out by this statement: remade (the
            // sessions locked on the lost one can no longer delete) and asked again.
            if (!ensure_lock_connection()) return unexpected(errc::temporary_failure);
            // The mailbox's lock, and then its fence free: a QUIT of a session that held the
            // mailbox until its lock connection was lost holds the fence while it checks that
            // lock and deletes (commit_on); until it is done the mailbox is in use.
            bool cut = false;
            r = lock_exec(lock_conn_.get(),
                          "SELECT CASE WHEN NOT pg_try_advisory_lock($1::bigint) THEN false "
                          "WHEN pg_try_advisory_lock_shared($2::bigint) THEN pg_advisory_unlock_shared($2::bigint) "
                          "ELSE NOT pg_advisory_unlock($1::bigint) END",
                          {{key}, {fence}}, cut);
            // Cut for want of an answer (a server or proxy that stopped answering): not asked
            // again on a new connection (lock_exec holds the logins off a moment).
            if (r || cut || PQstatus(lock_conn_.get()) != CONNECTION_BAD) break;
        }
        if (!r) {
            // A statement that failed on a live connection (out of shared memory for locks, a
            // cancel) may have taken the mailbox's lock before it failed: a session-level lock
            // outlives the failed statement, and unrecorded here it would stay held, the
            // mailbox in use on every front-end until this lock connection goes. Let go of it
            // and of the fence's shared lock, which every QUIT of the mailbox would else wait on.
            if (lock_conn_ && PQstatus(lock_conn_.get()) == CONNECTION_OK) {
                // Each returns false (and the server warns) for a lock not held; a lock key never
                // stacks here (locked_ says this front-end holds no lock of this mailbox).
                bool cut = false;
                (void)lock_exec(lock_conn_.get(), "SELECT pg_advisory_unlock($1::bigint), pg_advisory_unlock_shared($2::bigint)",
                                {{key}, {fence}}, cut);
            }
            return unexpected(r.error());
        }
        if (std::string_view(PQgetvalue(r->get(), 0, 0)) != "t") return unexpected(errc::mailbox_in_use);
        locked_.emplace(mailbox, lock_generation_);
        return {};
    }

    void unlock(std::string_view mailbox) noexcept override {
        std::lock_guard lock(lock_mutex_);
        auto it = locked_.find(mailbox);
        if (it == locked_.end()) return;
        const std::uint64_t generation = it->second;
        locked_.erase(it);
        // NOTE: a lost lock connection released its locks with it: one taken on an earlier
        // connection is not held on this one.
        if (generation == lock_generation_ && lock_conn_ && PQstatus(lock_conn_.get()) == CONNECTION_OK) {
            const std::string key = std::to_string(lock_key(db_->options().schema, mailbox));
            bool cut = false;
            (void)lock_exec(lock_conn_.get(), "SELECT pg_advisory_unlock($1::bigint)", {{key}}, cut);
        }
    }

    result<std::vector<message_info>> snapshot(std::string_view mailbox) override {
        if (mailbox.empty()) return unexpected(errc::bad_input);
        auto r = db_->with_retry([&](PGconn* c) {
            return db_->exec(c,
                             db_->sql("SELECT m.id, b.wire_octets, m.uidl, m.seen FROM @.messages m "
                                      "JOIN @.mailboxes x ON x.id = m.mailbox_id JOIN @.bodies b ON b.id = m.body_id "
                                      "WHERE x.name = $1 ORDER BY m.id"),
                             {{mailbox, true}});
        });
        if (!r) return unexpected(r.error());
        std::vector<message_info> out;
        const int n = PQntuples(r->get());
        out.reserve(static_cast<std::size_t>(n));
        for (int i = 0; i < n; ++i) {
            message_info m;
            m.id = PQgetvalue(r->get(), i, 0);
            m.octets = std::strtoull(PQgetvalue(r->get(), i, 1), nullptr, 10);
            if (!PQgetisnull(r->get(), i, 2)) m.uidl = PQgetvalue(r->get(), i, 2);
            m.seen = std::string_view(PQgetvalue(r->get(), i, 3)) == "t";
            out.push_back(std::move(m));
        }
        return out;
    }

    result<message> open(std::string_view mailbox, std::string_view id) override {
        if (mailbox.empty()) return unexpected(errc::bad_input);
        if (!numeric(id)) return unexpected(errc::not_found);
        const std::string mid(id);
        // One round trip: the row and the first piece.
        auto r = db_->with_retry([&](connection& c) { return db_->run(c, statement::open, {{mailbox, true}, {mid}}, true); });
        if (!r) return unexpected(r.error());
        if (PQntuples(r->get()) != 1) return unexpected(errc::not_found);
        PGresult* row = r->get();
        std::string body(PQgetvalue(row, 0, 0), static_cast<std::size_t>(PQgetlength(row, 0, 0)));
        const std::uint64_t octets = std::strtoull(std::string(PQgetvalue(row, 0, 1), static_cast<std::size_t>(PQgetlength(row, 0, 1))).c_str(), nullptr, 10);
        std::string first;
        if (!PQgetisnull(row, 0, 2)) first.assign(PQgetvalue(row, 0, 2), static_cast<std::size_t>(PQgetlength(row, 0, 2)));
        if (octets > 0 && first.empty()) return unexpected(errc::io_error);  // a body without its first piece
        message out(std::make_unique<chunk_source>(db_, std::move(body), octets, std::move(first)), octets);
        if (!PQgetisnull(row, 0, 3)) {
            const long long us = std::strtoll(std::string(PQgetvalue(row, 0, 3), static_cast<std::size_t>(PQgetlength(row, 0, 3))).c_str(), nullptr, 10);
            out.set_received(std::chrono::system_clock::time_point(std::chrono::microseconds(us)));
        }
        return out;
    }

    std::vector<std::error_code> commit(std::string_view mailbox, std::span<const std::string> deleted,
                                        std::span<const std::string> seen) override {
        std::vector<std::error_code> out(deleted.size());
        if (mailbox.empty()) {
            std::fill(out.begin(), out.end(), make_error_code(errc::bad_input));
            return out;
        }
        // A session's QUIT deletes only while the lock connection its lock was taken on still
        // holds it. One that was lost released the lock with it: another front-end may have had
        // the mailbox since (its session may have fetched and deleted what this one did, and
        // gone again), and two sessions must never both delete. Such a session's QUIT fails,
        // nothing deleted; the fetched messages are fetched again by the next session.
        std::optional<lock_holder> holder;
        if (!deleted.empty()) {
            holder = holder_of(mailbox);
            if (!holder) {
                refuse_lost_lock();
                std::fill(out.begin(), out.end(), make_error_code(errc::temporary_failure));
                return out;
            }
        }
        auto r = db_->with_retry([&](PGconn* c) { return commit_on(c, mailbox, deleted, seen, holder); });
        if (!r && r.error() == make_error_code(errc::mailbox_in_use)) {
            // The check in the transaction found the lock gone: the lock connection is lost
            // (the server ended it) though nothing here used it since. Found out now, so new
            // logins lock on a new one at once.
            if (holder) notice_lost_lock_connection(holder->generation);
            refuse_lost_lock();
            std::fill(out.begin(), out.end(), make_error_code(errc::temporary_failure));
            return out;
        }
        if (!r) std::fill(out.begin(), out.end(), r.error());
        return out;
    }

    // A server's committer thread commits this store's deliveries in groups too (commit_batch):
    // no pool thread per delivery waiting for its batch; begin_delivery() needs no database.
    // NOTE: not while someone subscribes (mailnetd): a batch then waits for its own NOTIFY to
    // come back before its deliveries are answered, and on the one committer thread no next
    // group could start meanwhile, as it does beside that wait on the pool.
    bool commits_in_groups() const noexcept override { return !events()->has_subscribers(); }
    // Each transaction costs the database about 300 us of CPU whatever it holds (half of it the
    // WAL flush), on the cores the front-ends share: three front-ends with a third of the
    // clients each committed 2.5-2.9 deliveries a transaction. Holding a small group back
    // for the messages about to end raised their rate by about a fifth (docs/benchmarks.md);
    // 3 ms (with the committer's bound of four commits' time) rather than 1 ms (and one
    // commit's time) by another 13-16% on two cores (docs/stores.md).
    std::chrono::microseconds group_linger() const noexcept override { return std::chrono::milliseconds(3); }
    bool knows_mailboxes(std::span<const std::string>) override { return true; }

    result<std::unique_ptr<delivery>> begin_delivery(std::span<const std::string> mailboxes) override {
        auto targets = delivery_targets(mailboxes);
        if (!targets) return unexpected(targets.error());
        return std::unique_ptr<delivery>(std::make_unique<pg_delivery>(db_, committer_, std::move(*targets)));
    }

    result<std::vector<std::string>> mailboxes() override {
        auto r = db_->with_retry([&](PGconn* c) { return db_->exec(c, db_->sql("SELECT name FROM @.mailboxes"), {}, true); });
        if (!r) return unexpected(r.error());
        std::vector<std::string> out;
        for (int i = 0; i < PQntuples(r->get()); ++i)
            out.emplace_back(PQgetvalue(r->get(), i, 0), static_cast<std::size_t>(PQgetlength(r->get(), i, 0)));
        std::sort(out.begin(), out.end());
        return out;
    }

    subscription subscribe(event_hub::listener listener) override {
        auto s = store::subscribe(std::move(listener));
        db_->start_listener();  // every front-end's events, from now on
        return s;
    }

private:
    // The lock connection a session's lock was taken on (lock_generation_ then): its server
    // process, told apart from a later one with its number by its start (in microseconds).
    struct lock_holder {
        std::uint64_t generation = 0;
        std::string pid, started;  // empty: a mailbox no session of this process locked
    };

    // QUIT's deletions and seen flags in one transaction (see commit()); errc::mailbox_in_use
    // if `holder` no longer holds the mailbox's lock.
    result<void> commit_on(PGconn* c, std::string_view mailbox, std::span<const std::string> deleted,
                           std::span<const std::string> seen, const std::optional<lock_holder>& holder) {
        auto fail = [](std::error_code e) -> result<void> { return unexpected(e); };
        auto box = db_->mailbox_id(c, mailbox, false);
        if (!box) return fail(box.error());
        if (*box == 0) return {};  // nothing there: every deletion is already true
        const std::string mb = std::to_string(*box);
        const std::string gone_ids = id_array(deleted);
        const std::string seen_ids = id_array(seen);
        auto rollback = [&](std::error_code e) {
            (void)db_->exec(c, "ROLLBACK");
            return fail(e);
        };
        if (auto r = db_->exec(c, "BEGIN"); !r) return fail(r.error());
        if (holder && !holder->pid.empty()) {
            // The lock connection may be lost at any moment, another front-end's session then
            // take the mailbox and read what this one is about to delete. So the fence first,
            // held till this transaction ends (a lock() that finds it taken answers in-use),
            // and only then whether the session's lock connection still holds the lock: if it
            // does, no other session can have the mailbox until these deletions are done.
            // (CASE evaluates its branches in order; the subqueries run when first reached.)
            // A fence held by another commit of this mailbox (a QUIT and an HTTP DELETE of one
            // mailnetd at once) is waited for, a moment at a time: it is over in milliseconds,
            // and is no sign that the lock was lost.
            const auto give_up_at = std::chrono::steady_clock::now() + fence_wait;
            for (;;) {
                auto r = db_->exec(c,
                                   "SELECT CASE WHEN NOT pg_try_advisory_xact_lock($1::bigint) THEN 'busy' WHEN "
                                   "EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
                                   "AND pid = $3::integer AND ((classid::bigint << 32) | objid::bigint) = $2::bigint) "
                                   "AND (SELECT (extract(epoch FROM backend_start) * 1000000)::bigint FROM "
                                   "pg_stat_get_activity($3::integer)) = $4::bigint THEN 'held' ELSE 'lost' END",
                                   {{std::to_string(fence_key(mailbox))}, {std::to_string(lock_key(db_->options().schema, mailbox))},
                                    {holder->pid}, {holder->started}});
                if (!r) return rollback(r.error());
                const std::string_view answer = PQgetvalue(r->get(), 0, 0);
                if (answer == "held") break;
                if (answer != "busy") return rollback(make_error_code(errc::mailbox_in_use));
                if (std::chrono::steady_clock::now() >= give_up_at) return rollback(make_error_code(errc::temporary_failure));
                std::this_thread::sleep_for(std::chrono::milliseconds(10));
            }
        }
        const bool wait = db_->should_wait_for_events();
        std::vector<std::string> gone;
        if (!deleted.empty()) {
            // The bodies first, locked, so two front-ends deleting the last two copies of one
            // body see each other's deletion and exactly one removes the body.
            if (auto r = db_->exec(c, db_->sql("SELECT b.id FROM @.bodies b WHERE b.id IN (SELECT body_id FROM @.messages "
                                               "WHERE mailbox_id = $1 AND id = ANY($2::bigint[])) ORDER BY b.id FOR UPDATE"),
                                   {{mb}, {gone_ids}});
                !r)
                return rollback(r.error());
            auto r = db_->exec(c, db_->sql("DELETE FROM @.messages WHERE mailbox_id = $1 AND id = ANY($2::bigint[]) "
                                           "RETURNING id, body_id"),
                               {{mb}, {gone_ids}});
            if (!r) return rollback(r.error());
            std::string bodies = "{";
            for (int i = 0; i < PQntuples(r->get()); ++i) {
                gone.emplace_back(PQgetvalue(r->get(), i, 0));
                bodies += (i ? "," : "") + std::string(PQgetvalue(r->get(), i, 1));
            }
            bodies += "}";
            if (!gone.empty()) {
                if (auto d = db_->exec(c, db_->sql("DELETE FROM @.bodies b WHERE b.id = ANY($1::bigint[]) AND NOT EXISTS "
                                                   "(SELECT 1 FROM @.messages m WHERE m.body_id = b.id)"),
                                       {{bodies}});
                    !d)
                    return rollback(d.error());
            }
            std::string ids = "{";
            for (const auto& id : gone) ids += (ids.size() > 1 ? "," : "") + id;
            ids += "}";
            if (!gone.empty())
                if (auto n = db_->notify_deleted(c, mailbox, ids); !n) return rollback(n.error());
        }
        if (!seen.empty()) {
            // NOTE: a failure to mark seen fails the whole QUIT here (one transaction), where
            // the Maildir store only logs it: the deletions are what must not half-happen.
            if (auto r = db_->exec(c, db_->sql("UPDATE @.messages SET seen = true WHERE mailbox_id = $1 AND id = ANY($2::bigint[])"),
                                   {{mb}, {seen_ids}});
                !r)
                return rollback(r.error());
        }
        const std::uint64_t marker = wait && !gone.empty() ? db_->next_marker() : 0;
        if (marker && !db_->notify(c, "E " + db_->front_end() + " " + std::to_string(marker)))
            return rollback(make_error_code(errc::temporary_failure));
        if (auto r = db_->exec(c, "COMMIT"); !r) return fail(r.error());
        if (!gone.empty() && !db_->wait_for_marker(marker))
            for (const auto& id : gone) db_->publish({store_event::kind::deleted, std::string(mailbox), id, 0, 0});
        return {};
    }

    // The lock connection the session on `mailbox` took its lock on, if it is the one in use
    // and libpq has not seen it lost (commit_on() asks the server); an empty holder for a
    // mailbox no session of this process locked (an HTTP DELETE needs no lock); none if the
    // session's lock was lost with an earlier connection.
    std::optional<lock_holder> holder_of(std::string_view mailbox) {
        std::lock_guard lock(lock_mutex_);
        const auto it = locked_.find(mailbox);
        if (it == locked_.end()) return lock_holder{};
        if (it->second != lock_generation_ || !lock_conn_ || PQstatus(lock_conn_.get()) != CONNECTION_OK) return std::nullopt;
        return lock_holder{lock_generation_, lock_pid_, lock_started_};
    }

    void refuse_lost_lock() {
        db_->options().log(log_level::error, "postgresql: the POP3 lock of a mailbox was lost with the lock connection it was "
                                             "taken on; its session's deletions are refused (-ERR [SYS/TEMP])");
    }

    // The lock connection of `generation` no longer holds a lock it took: if it is still the
    // one in use, it is asked whether it lives, and replaced if not.
    void notice_lost_lock_connection(std::uint64_t generation) {
        std::lock_guard lock(lock_mutex_);
        if (generation != lock_generation_ || !lock_conn_) return;
        bool cut = false;
        (void)lock_exec(lock_conn_.get(), "SELECT 1", {}, cut);
        (void)ensure_lock_connection();
    }

    // The key of a mailbox's fence (see lock() and commit_on()): another name space than the
    // locks' (no schema name holds \x01).
    long long fence_key(std::string_view mailbox) const { return lock_key(db_->options().schema + "\x01" "fence", mailbox); }

    static bool numeric(std::string_view id) {
        return !id.empty() && id.size() <= 18 && std::all_of(id.begin(), id.end(), [](char c) { return c >= '0' && c <= '9'; });
    }

    // A bigint[] literal of the numeric ids (others name no message of this store).
    static std::string id_array(std::span<const std::string> ids) {
        std::string out = "{";
        bool first = true;
        for (const auto& id : ids) {
            if (!numeric(id)) continue;
            if (!first) out += ',';
            out += id;
            first = false;
        }
        return out + "}";
    }

    void setup_lock_connection(PGconn* c) { db_->keep_alive(c); }

    // A statement on the lock connection (caller holds lock_mutex_), as database::exec. One
    // cut for want of an answer (`cut`) holds every login, unlock and QUIT of this front-end
    // off the lock connection for reconnect_pause, as a failed connect does: those queued
    // behind it (on lock_mutex_) get [SYS/TEMP] at once instead of each reconnecting (a stuck
    // pooler takes the login) and waiting out a call_timeout of its own. A short pause, not
    // the call's time: the server may answer again the moment after.
    // NOTE: cuts() counts every call's cut: one of another call at the same moment also counts
    // here (a login then fails once, temporarily, where a retry might have served it).
    result<pg_result> lock_exec(PGconn* c, std::string_view text, std::initializer_list<param> params, bool& cut) {
        const auto cuts_before = db_->cuts();
        auto r = db_->exec(c, text, params);
        cut = !r && db_->cuts() != cuts_before;
        if (cut) lock_retry_at_ = std::chrono::steady_clock::now() + reconnect_pause;
        return r;
    }

    // Caller holds lock_mutex_. Reconnects a lost lock connection; false if the database cannot
    // be reached. NOTE: the locks of the sessions still open here are not taken back: another
    // session may have had the mailbox meanwhile (and gone again), and this one could not tell.
    // Those sessions may go on reading, but their QUIT deletes nothing (commit()); their
    // mailboxes stay in use in this process until they end.
    // NOTE: called under lock_mutex_, which every login, QUIT and unlock of this front-end
    // needs: after a failed connect (up to the connect timeout, 10 s, for a server that does
    // not answer) none is tried again for as long as that one took (at least a second), so
    // the sessions queued behind it get [SYS/TEMP] at once instead of each waiting for a
    // connect of its own.
    bool ensure_lock_connection() {
        if (lock_conn_ && PQstatus(lock_conn_.get()) == CONNECTION_OK) return true;
        lock_conn_.reset();
        const auto now = std::chrono::steady_clock::now();
        if (now < lock_retry_at_) return false;
        auto c = db_->connect("locks");
        if (!c) {
            const auto took = std::chrono::steady_clock::now() - now;
            lock_retry_at_ = std::chrono::steady_clock::now() + std::max<std::chrono::steady_clock::duration>(reconnect_pause, took);
            return false;
        }
        lock_retry_at_ = {};
        setup_lock_connection(c->get());
        auto who = db_->exec(c->get(), "SELECT pg_backend_pid(), (extract(epoch FROM backend_start) * 1000000)::bigint "
                                       "FROM pg_stat_get_activity(pg_backend_pid())");
        if (!who || PQntuples(who->get()) != 1 || PQgetisnull(who->get(), 0, 1)) {
            // A server that took the login and then answered nothing (its first statements
            // cut): the logins queued behind this one are held off a moment, as after a cut.
            lock_retry_at_ = std::chrono::steady_clock::now() + reconnect_pause;
            return false;
        }
        const auto lost = static_cast<std::size_t>(
            std::count_if(locked_.begin(), locked_.end(), [&](const auto& l) { return l.second == lock_generation_; }));
        if (lost > 0 && lock_generation_ > 0)
            db_->options().log(log_level::error, "postgresql: the lock connection was lost, and the POP3 locks on it; " +
                                                     std::to_string(lost) + " session(s) holding one can no longer delete "
                                                     "(their QUIT: -ERR [SYS/TEMP])");
        ++lock_generation_;
        lock_conn_ = std::move(*c);
        lock_pid_ = PQgetvalue(who->get(), 0, 0);
        lock_started_ = PQgetvalue(who->get(), 0, 1);
        return true;
    }

    std::shared_ptr<database> db_;
    std::shared_ptr<committer> committer_;
    std::mutex lock_mutex_;
    pg_conn lock_conn_;                          // under lock_mutex_
    std::uint64_t lock_generation_ = 0;          // under lock_mutex_: lock connections made so far
    std::string lock_pid_, lock_started_;        // under lock_mutex_: lock_conn_'s server process (lock_holder)
    std::chrono::steady_clock::time_point lock_retry_at_{};  // under lock_mutex_: no connect before
    // Under lock_mutex_: this process's sessions, each with the generation of the lock
    // connection its lock was taken on.
    std::map<std::string, std::uint64_t, std::less<>> locked_;
};

}  // namespace

namespace detail {

bool postgresql_uri_has_password_here(const char* uri) noexcept {
    // libpq's own parser: it decodes %-escapes in names and values (?pass%77ord=... is a password).
    char* error = nullptr;
    PQconninfoOption* options = PQconninfoParse(uri, &error);
    if (error) PQfreemem(error);
    if (!options) return false;  // not a URI libpq takes: it will refuse it when connecting
    bool has = false;
    for (PQconninfoOption* o = options; o->keyword; ++o)
        if (std::string_view(o->keyword) == "password" && o->val && *o->val) has = true;
    PQconninfoFree(options);
    return has;
}

result<std::unique_ptr<store>> open_postgresql_store_here(postgresql_options options) {
    if (!valid_schema(options.schema)) return unexpected(errc::bad_config);
    if (options.uri.empty()) return unexpected(errc::bad_config);
    if (!options.log) options.log = null_log();
    auto s = std::make_unique<postgresql_store>(std::move(options));
    if (auto r = s->open(); !r) return unexpected(r.error());
    return std::unique_ptr<store>(std::move(s));
}

}  // namespace detail

}  // namespace mailnet

extern "C" __attribute__((visibility("default"))) const mailnet::detail::postgresql_module*
mailnet_postgresql_module_v1() noexcept {
    static const mailnet::detail::postgresql_module m{mailnet::detail::postgresql_module_version,
                                                      MAILNET_MODULE_VERSION, sizeof(mailnet::postgresql_options),
                                                      &mailnet::detail::open_postgresql_store_here,
                                                      &mailnet::detail::postgresql_uri_has_password_here};
    return &m;
}
