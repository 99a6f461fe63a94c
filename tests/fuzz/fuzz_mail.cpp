// The mail cleaner: parse_mail on the raw input (headers, folded lines, RFC 2047 encoded words,
// MIME multiparts, message/rfc822, base64, quoted-printable, charsets through iconv, HTML to
// text), and its pieces on their own. parse_mail never throws on content and always returns
// valid UTF-8 (documented), so both are checked; to_utf8 gets the input's first line as charset.
#include <cstdint>

#include <dynabert/text/mail.hpp>

#include "fuzz_common.hpp"

using namespace dynabert;
using namespace dynabert::text;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view raw = fuzz::view(data, size);
  const MailText m = parse_mail(raw);
  FUZZ_CHECK(mail_detail::valid_utf8(m.subject));
  FUZZ_CHECK(mail_detail::valid_utf8(m.body));
  FUZZ_CHECK(mail_detail::valid_utf8(m.text()));
  FUZZ_CHECK(mail_detail::valid_utf8(decode_header(raw)));
  const auto [first_line, rest] = fuzz::split(raw, '\n');
  FUZZ_CHECK(mail_detail::valid_utf8(to_utf8(rest, std::string(first_line.substr(0, 40)))));
  const std::string html = html_to_text(raw);
  if (mail_detail::valid_utf8(raw)) FUZZ_CHECK(mail_detail::valid_utf8(html));
  (void)decode_quoted_printable(raw);
  (void)decode_base64(raw);
  return 0;
}
