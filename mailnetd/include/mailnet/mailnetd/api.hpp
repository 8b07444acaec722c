// mailnet/mailnetd/api.hpp: the parts of mailnetd's HTTP API that need no socket (DESIGN.md
// "mailnetd's HTTP API and web view"): query strings, the list and wait parameters with their
// 400s, and the JSON of summaries and message views (nlohmann-json: no JSON written by hand).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "mailnet/mailnetd/mail_index.hpp"
#include "mailnet/mailnetd/message_view.hpp"

namespace mailnet::mailnetd {

/// Limits of the API (DESIGN.md "mailnetd's HTTP API").
struct api_limits {
    std::size_t max_list = 1000;                ///< limit= at most
    std::chrono::seconds max_wait{600};         ///< timeout= at most
    std::size_t max_header_octets = 16 * 1024;  ///< request headers; 413 beyond
    std::size_t max_body_octets = 64 * 1024;    ///< request bodies; 413 beyond
    std::uint64_t max_view_octets = 32ull << 20;  ///< a message larger is not decoded (413)
    std::size_t max_connections = 2048;  ///< HTTP connections at once; more wait in the listen backlog
    std::size_t max_waiters = 1500;      ///< pending GET /wait; 503 beyond
    std::size_t max_event_streams = 64;  ///< open GET /events streams; 503 beyond
    std::size_t max_views = 4;           ///< message views (detail, /html, /parts) being decoded at once; 503 beyond
    std::size_t list_piece_octets = 16 * 1024;  ///< a list or wait answer is written in pieces of about this size
};

/// An error answer: status and the text of {"error": ...}.
struct api_error {
    int status = 400;
    std::string message;
};

using query_params = std::vector<std::pair<std::string, std::string>>;

/// Splits and %-decodes a query string ('+' is a space); a bad escape or a repeated name is 400.
std::variant<query_params, api_error> parse_query_string(std::string_view query);

/// GET /api/v1/messages: mailbox, to, from, subject, limit (1..max_list, default 50).
std::variant<message_query, api_error> parse_list_request(const query_params& params, const api_limits& lim);

/// GET /api/v1/wait: the list filters, since (an id the index knows, or RFC 3339), count (>= 1,
/// default 1), timeout (seconds, 0..max_wait, default 30), limit (the summaries answered,
/// 1..max_list, default 50 or `count` if larger).
struct wait_request {
    message_query q;
    std::size_t count = 1;
    std::chrono::seconds timeout{30};
};
std::variant<wait_request, api_error> parse_wait_request(const query_params& params, const mail_index& index,
                                                         const api_limits& lim);

/// DELETE /api/v1/messages: mailbox (optional).
std::variant<std::string, api_error> parse_delete_request(const query_params& params);

/// Whether a part number is "1", "1.2", ... (digits, dots between, no leading zeros).
bool valid_part_number(std::string_view part);

/// {"error": message}
std::string error_json(std::string_view message);
/// One summary.
std::string summary_json(const message_summary& s);
/// {"id": id}
std::string id_json(std::string_view id);
/// {"total", "messages"}
std::string list_json(const query_result& r);

/// A list or wait answer written in pieces, so a long one is never one string: the octets of
/// list_json(index.query(q)) when the index does not change meanwhile. `total` is counted at
/// the start; a message deleted before its piece is left out, and one arriving meanwhile that
/// is newer than what was already written is not added (newest first stays true).
class list_writer {
public:
    /// `total`: how many match, when the caller knows (a waiter's count); else counted here.
    list_writer(const mail_index& index, message_query q, std::optional<std::size_t> total = std::nullopt);
    /// The next piece, about `max_octets` (a single summary may be longer); "" once all is out.
    std::string next(const mail_index& index, std::size_t max_octets);

private:
    message_query q_;
    std::size_t total_ = 0;
    std::size_t written_ = 0;           // summaries written
    std::optional<order_key> cursor_;   // the last one written
    std::string head_, tail_;           // {"messages":[  ],"total":N}
    bool started_ = false, finished_ = false;
};
/// The summary plus headers, text, html, attachments, links.
std::string message_json(const message_summary& s, const message_view& v);
/// [{"name", "messages", "size"}] for the mailboxes the store lists, counted from the index.
std::string mailboxes_json(const std::vector<std::string>& names, const mail_index& index);

}  // namespace mailnet::mailnetd
