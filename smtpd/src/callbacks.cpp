// callbacks.cpp: the default callbacks and the trace headers of a final delivery (RFC 5321 4.4).
#include "mailnet/smtpd/callbacks.hpp"

#include <cctype>
#include <cstdio>
#include <ctime>

namespace mailnet::smtp {

verdict callbacks::validate_host(std::string_view) { return verdict::accept(); }
verdict callbacks::validate_sender(const mailbox_address&) { return verdict::accept(); }
verdict callbacks::validate_recipient(const mailbox_address&) { return verdict::accept(); }
verdict callbacks::deliver(const transaction_info&, message&) { return verdict::accept(); }

namespace {

// RFC 5322 3.3 date-time in UTC, independent of the locale.
std::string rfc5322_date(std::chrono::system_clock::time_point t) {
    static constexpr const char* days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static constexpr const char* months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                             "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    const std::time_t secs = std::chrono::system_clock::to_time_t(t);
    std::tm tm{};
    ::gmtime_r(&secs, &tm);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday % 7], tm.tm_mday,
                  months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    return buf;
}

// RFC 5321 4.1.3 address literal of the peer: [192.0.2.1] or [IPv6:2001:db8::1].
std::string address_literal(const std::string& ip) {
    if (ip.find(':') == std::string::npos) return "[" + ip + "]";
    return "[IPv6:" + ip + "]";
}

std::string path(const mailbox_address& a) { return a.is_null() ? "<>" : "<" + a.address() + ">"; }

}  // namespace

std::string trace_headers(const transaction_info& t) {
    // Every part is data the core checked: the EHLO name printable ASCII without spaces, the
    // addresses parsed (no control octets), the rest ours.
    std::string h = "Return-Path: " + path(t.mail.sender) + "\n";
    // The EHLO name as a domain or address literal can be written: any other octet (';' would
    // end the from clause for a parser, '(' open a comment) becomes '_'.
    std::string helo = t.helo.empty() ? std::string("unknown") : t.helo;
    for (char& c : helo)
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_' || c == ':' || c == '[' ||
              c == ']'))
            c = '_';
    h += "Received: from " + helo + " (" + address_literal(t.peer_address) +
         ")\n\tby " + t.hostname + " (mailnet) with " + t.protocol + " id " + t.id;
    if (t.mail.recipients.size() == 1)
        h += "\n\tfor " + path(t.mail.recipients.front()) + "; ";
    else
        h += ";\n\t";
    h += rfc5322_date(t.received) + "\n";
    return h;
}

}  // namespace mailnet::smtp
