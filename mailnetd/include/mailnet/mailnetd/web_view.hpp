// mailnet/mailnetd/web_view.hpp: mailnetd's web view (DESIGN.md "mailnetd's HTTP API and web
// view"): the one page GET / serves and the Content-Security-Policies of the page and of a mail's HTML.
#pragma once

#include <string>
#include <string_view>

namespace mailnet::mailnetd {

/// The page GET / answers: one HTML document, its style and script inline, no external asset.
const std::string& web_view_page();

/// The page's Content-Security-Policy: its inline style and script allowed by their SHA-256
/// (CSP3 hash-source), nothing else runs; connections, frames and images only from mailnetd.
const std::string& web_view_csp();

/// The Content-Security-Policy of a message's HTML part shown in the view's iframe
/// (GET /api/v1/messages/{id}/html): no script, nothing remote (images only data:).
inline constexpr std::string_view mail_html_csp =
    "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'";

}  // namespace mailnet::mailnetd
