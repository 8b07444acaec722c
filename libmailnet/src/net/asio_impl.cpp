// asio_impl.cpp: Asio and Asio SSL compiled once here (ASIO_SEPARATE_COMPILATION), so the
// library's other translation units and its users do not each compile them.
#include <asio/impl/src.hpp>
#include <asio/ssl/impl/src.hpp>
