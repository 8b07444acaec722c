# The sans-I/O protocol cores of every component: sources that include no Asio header.
# libFuzzer builds (clang-14, which cannot compile Asio's coroutine headers) link only these.
# message.cpp (the message handle and its lazy mimetic parse) needs mimetic: link
# mailnet::mimetic (MailnetDeps) with this list.
set(MAILNET_FUZZ_CORE_SOURCES
  ${PROJECT_SOURCE_DIR}/libmailnet/src/error.cpp
  ${PROJECT_SOURCE_DIR}/libmailnet/src/line_reader.cpp
  ${PROJECT_SOURCE_DIR}/libmailnet/src/base64.cpp
  ${PROJECT_SOURCE_DIR}/libmailnet/src/transfer_encoding.cpp
  ${PROJECT_SOURCE_DIR}/libmailnet/src/auth/sasl.cpp
  ${PROJECT_SOURCE_DIR}/libmailnet/src/address.cpp
  ${PROJECT_SOURCE_DIR}/libmailnet/src/faults.cpp
  ${PROJECT_SOURCE_DIR}/libmailnet/src/dot_stuffing.cpp
  ${PROJECT_SOURCE_DIR}/libmailnet/src/store/message.cpp
  ${PROJECT_SOURCE_DIR}/libmailnet/src/store/message_mime.cpp
  ${PROJECT_SOURCE_DIR}/pop3d/src/session.cpp
  ${PROJECT_SOURCE_DIR}/smtpd/src/session.cpp
  ${PROJECT_SOURCE_DIR}/pop3c/src/core.cpp
  ${PROJECT_SOURCE_DIR}/mailnetd/src/message_view.cpp
  ${PROJECT_SOURCE_DIR}/mailnetd/src/api.cpp
  ${PROJECT_SOURCE_DIR}/mailnetd/src/faults_json.cpp
  ${PROJECT_SOURCE_DIR}/mailnetd/src/mail_index.cpp
)
