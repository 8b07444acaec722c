# Find logic for the dependencies that ship no CMake config and no .pc file:
# standalone Asio (header-only), mimetic, libcrypt and libpq. Installed with the mailnet package.
include(CMakeFindDependencyMacro)
find_package(Threads REQUIRED)
find_package(OpenSSL 3 REQUIRED)

if(NOT TARGET mailnet::asio)
  find_path(MAILNET_ASIO_INCLUDE_DIR asio.hpp REQUIRED)
  add_library(mailnet::asio INTERFACE IMPORTED)
  # One Asio configuration for every translation unit (ASIO_SEPARATE_COMPILATION: Asio is compiled
  # once, in libmailnet, and a unit built with other macros would disagree with it, e.g. on the
  # handler allocation hooks). NOTE: no ASIO_NO_DEPRECATED: RESTinio 0.6.16 (mailnetd's HTTP API)
  # uses buffer_cast, socket_base::max_connections and address::from_string, which it hides.
  set_target_properties(mailnet::asio PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${MAILNET_ASIO_INCLUDE_DIR}"
    INTERFACE_COMPILE_DEFINITIONS "ASIO_STANDALONE;ASIO_SEPARATE_COMPILATION"
    INTERFACE_LINK_LIBRARIES "Threads::Threads;OpenSSL::SSL;OpenSSL::Crypto")
endif()

if(NOT TARGET mailnet::mimetic)
  find_path(MAILNET_MIMETIC_INCLUDE_DIR mimetic/mimetic.h REQUIRED)
  find_library(MAILNET_MIMETIC_LIBRARY mimetic REQUIRED)
  add_library(mailnet::mimetic UNKNOWN IMPORTED)
  set_target_properties(mailnet::mimetic PROPERTIES
    IMPORTED_LOCATION "${MAILNET_MIMETIC_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${MAILNET_MIMETIC_INCLUDE_DIR}")
endif()

if(NOT TARGET mailnet::crypt)
  find_path(MAILNET_CRYPT_INCLUDE_DIR crypt.h REQUIRED)
  find_library(MAILNET_CRYPT_LIBRARY crypt REQUIRED)
  add_library(mailnet::crypt UNKNOWN IMPORTED)
  set_target_properties(mailnet::crypt PROPERTIES
    IMPORTED_LOCATION "${MAILNET_CRYPT_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${MAILNET_CRYPT_INCLUDE_DIR}")
endif()

# libpq (libpq-dev), for the PostgreSQL store: always in the build tree; for the installed
# package only when libmailnet is static (mailnetConfig.cmake sets MAILNET_NEEDS_PQ).
if(NOT TARGET mailnet::pq AND (NOT DEFINED MAILNET_NEEDS_PQ OR MAILNET_NEEDS_PQ))
  find_path(MAILNET_PQ_INCLUDE_DIR libpq-fe.h PATH_SUFFIXES postgresql REQUIRED)
  find_library(MAILNET_PQ_LIBRARY pq REQUIRED)
  add_library(mailnet::pq UNKNOWN IMPORTED)
  set_target_properties(mailnet::pq PROPERTIES
    IMPORTED_LOCATION "${MAILNET_PQ_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${MAILNET_PQ_INCLUDE_DIR}")
endif()
