// off_thread.hpp: blocking work on a pool, its answer on the I/O thread, for mailnetd's HTTP
// server (http_server.cpp): the one place that crosses threads, so what the work holds dies right.
#pragma once

#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/thread_pool.hpp>

#include <memory>
#include <optional>
#include <utility>

namespace mailnet::mailnetd {

/// Runs `work()` on `pool`, then `then(result)` on `io`. Whatever `work` holds is let go on the
/// pool before `then` is queued, so an object both hold (a response being streamed, which
/// holds RESTinio's connection) is always destroyed on the I/O thread, by `then` or after it.
template <class Work, class Then>
void off_thread(asio::thread_pool& pool, asio::io_context& io, Work work, Then then) {
    asio::post(pool, [&io, work = std::optional<Work>(std::move(work)), then = std::move(then)]() mutable {
        // Shared: a result may be move-only (a message), and this Asio copies handlers.
        auto r = std::make_shared<decltype((*work)())>((*work)());
        work.reset();
        asio::post(io, [r = std::move(r), then = std::move(then)]() mutable { then(std::move(*r)); });
    });
}

}  // namespace mailnet::mailnetd
