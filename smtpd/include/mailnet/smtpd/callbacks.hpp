// mailnet/smtpd/callbacks.hpp: the seed's four callbacks (validate_host, validate_sender,
// validate_recipient, deliver) as a virtual interface and as std::function slots (DESIGN.md
// "The pluggable interfaces"). Addresses arrive parsed, as data; nothing is ever evaluated.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <string_view>

#include "mailnet/smtpd/session.hpp"
#include "mailnet/store/message.hpp"

namespace mailnet::smtp {

/// What a deliver callback knows of a message besides its octets.
struct transaction_info {
    envelope mail;                                    ///< sender, recipients, SIZE/BODY/SMTPUTF8
    std::string id;                                   ///< the queue id ("Ok: queued as ID")
    std::string peer_address;                         ///< the client's IP address
    std::string helo;                                 ///< its EHLO/HELO name
    std::string protocol;                             ///< ESMTP, ESMTPS, ESMTPSA... (RFC 3848)
    std::string account;                              ///< the AUTH account, or empty
    std::string hostname;                             ///< this server's name
    std::chrono::system_clock::time_point received;   ///< when the message began to arrive
};

/// The trace headers of a final delivery (RFC 5321 4.4), LF line ends, ready to prepend:
/// "Return-Path: <sender>" and "Received: from HELO ([ADDRESS]) by HOST (mailnet) with PROTO id ID
/// [for <rcpt>]; DATE". `for` only with a single recipient, so a copy shows no Bcc'd address.
/// In HELO, an octet other than a letter, digit or one of . - _ : [ ] is written as '_' (a ';'
/// would end the from clause for a parser, a '(' open a comment).
std::string trace_headers(const transaction_info& t);

/// The seed's callbacks. Each may block (DNS, a database): the server calls them on its blocking
/// pool, never on an I/O thread. An exception becomes 451 4.3.0 (421 for validate_host); its
/// text is logged, never sent. Implementations are thread-safe.
class callbacks {
public:
    virtual ~callbacks() = default;
    /// Before the greeting; a refusal is sent instead of it. Default: accept.
    virtual verdict validate_host(std::string_view peer_address);
    /// MAIL FROM. Default: accept.
    virtual verdict validate_sender(const mailbox_address& sender);
    /// Each RCPT TO. Default: accept.
    virtual verdict validate_recipient(const mailbox_address& recipient);
    /// Called only when the server has no store: the message as the client sent it (LF line
    /// ends, no trace headers; trace_headers(t) gives them). Accept only once it is safe:
    /// the client is told 250 and forgets it. Default: accept and drop (a sink, for tests).
    virtual verdict deliver(const transaction_info& t, message& m);
};

/// The same callbacks as std::function slots; an empty slot means the default.
struct callback_functions : callbacks {
    std::function<verdict(std::string_view)> on_validate_host;
    std::function<verdict(const mailbox_address&)> on_validate_sender;
    std::function<verdict(const mailbox_address&)> on_validate_recipient;
    std::function<verdict(const transaction_info&, message&)> on_deliver;

    verdict validate_host(std::string_view p) override {
        return on_validate_host ? on_validate_host(p) : callbacks::validate_host(p);
    }
    verdict validate_sender(const mailbox_address& a) override {
        return on_validate_sender ? on_validate_sender(a) : callbacks::validate_sender(a);
    }
    verdict validate_recipient(const mailbox_address& a) override {
        return on_validate_recipient ? on_validate_recipient(a) : callbacks::validate_recipient(a);
    }
    verdict deliver(const transaction_info& t, message& m) override {
        return on_deliver ? on_deliver(t, m) : callbacks::deliver(t, m);
    }
};

}  // namespace mailnet::smtp
