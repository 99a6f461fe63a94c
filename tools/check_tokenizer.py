#!/usr/bin/python3
"""The C++ WordPiece tokenizer against a Python reference (a ctest when the data is fetched).

The reference below is written after Hugging Face transformers v2.1.1's BertTokenizer
(BasicTokenizer + WordpieceTokenizer, with the special tokens split off first), and runs on
Python's own string rules: str.lower() (full case mapping, final sigma), str.split() white space,
unicodedata categories and NFD. Texts: the UCI sentiment sentences, raw SpamAssassin mails and the
same mails cleaned by dynabert's mail parser, and a list of adversarial strings (accents, CJK,
emoji, controls, Unicode white space, sigma, U+0130, specials inside words, long words).

    /usr/bin/python3 tools/check_tokenizer.py BUILD/examples/dynabert_tokenize [--data .data] [--mails 600]

Every text must give exactly the reference's ids. Prints a line per corpus and a summary.
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import unicodedata

SPECIALS = ["[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]"]


# ---- the reference (transformers v2.1.1 semantics) -------------------------------------------------
def is_whitespace(c):
    return c in " \t\n\r" or unicodedata.category(c) == "Zs"


def is_control(c):
    if c in "\t\n\r":
        return False
    return unicodedata.category(c).startswith("C")


def is_punctuation(c):
    cp = ord(c)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(c).startswith("P")


def is_chinese(cp):
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
            or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def whitespace_tokenize(t):
    t = t.strip()
    return t.split() if t else []


def basic_tokenize(text, lower):
    out = []
    for c in text:  # _clean_text
        cp = ord(c)
        if cp == 0 or cp == 0xFFFD or is_control(c):
            continue
        out.append(" " if is_whitespace(c) else c)
    text = "".join(" " + c + " " if is_chinese(ord(c)) else c for c in out)
    split = []
    for tok in whitespace_tokenize(text):
        if lower:
            tok = tok.lower()
            tok = "".join(c for c in unicodedata.normalize("NFD", tok) if unicodedata.category(c) != "Mn")
        cur, pieces = [], []
        for c in tok:  # _run_split_on_punc
            if is_punctuation(c):
                if cur:
                    pieces.append("".join(cur))
                    cur = []
                pieces.append(c)
            else:
                cur.append(c)
        if cur:
            pieces.append("".join(cur))
        split.extend(pieces)
    return whitespace_tokenize(" ".join(split))


def wordpiece(token, vocab, unk):
    if len(token) > 100:
        return [unk]
    out, start = [], 0
    while start < len(token):
        end, cur = len(token), None
        while start < end:
            sub = token[start:end]
            if start > 0:
                sub = "##" + sub
            if sub in vocab:
                cur = vocab[sub]
                break
            end -= 1
        if cur is None:
            return [unk]
        out.append(cur)
        start = end
    return out


def split_on_specials(text):
    """transformers v2.1.1 PreTrainedTokenizer.tokenize: split_on_token over every special token."""
    pieces = [text]
    for tok in SPECIALS:
        nxt = []
        for p in pieces:
            if p in SPECIALS:
                nxt.append(p)
                continue
            parts = p.split(tok)
            for i, sub in enumerate(parts):
                sub = sub.strip()
                if i == 0 and not sub:
                    nxt.append(tok)
                elif i == len(parts) - 1:
                    if sub:
                        nxt.append(sub)
                else:
                    if sub:
                        nxt.append(sub)
                    nxt.append(tok)
        pieces = nxt
    return pieces


def reference_ids(text, vocab, lower=True):
    unk = vocab["[UNK]"]
    if not text.strip():
        return []
    ids = []
    for piece in split_on_specials(text):
        if piece in SPECIALS:
            ids.append(vocab[piece])
            continue
        for word in basic_tokenize(piece, lower):
            ids.extend(wordpiece(word, vocab, unk))
    return ids


ADVERSARIAL = [
    "Héllo wörld, naïve café — déjà vu!", "ΟΔΟΣ ΣΟΦΟΣ. ΣΑΣ Σ ΣΣ", "İstanbul İİ", "ǅemal ǈ ǋ", "ﬁne ﬂow ẞtraße",
    "line\u2028break para\u2029graph", "tab\there\u00a0nbsp\u3000ideo\u2003em", "zero\u200bwidth join\u200d", "ctl\x07\x1b\x7fchars",
    "emoji 😀👍🏽 ok", "中文字符和日本語のテキスト", "한국어 텍스트", "mixed中文english", "[CLS] start [SEP] end [MASK]",
    "word[SEP]word", "[C\x00LS] not special", "[cls] lower", "a" * 120, "x" + "é" * 101, "   ", "\t\n", "",
    "don't won't y'all", "3.14 1,000,000 $5 50% 10-20", "e-mail@example.com http://a.b/c?d=e", "“quoted” ‘single’ «guillemets»",
    "ÀÉÎÕÜ àéîõü ÇÑ", "\u00aaΣ \u00baΣ \U0001F130Σ xΣ", "Ωmega ωmega µ", "Ⅻ ⅻ ① ⒜", "ﾊﾝｶｸ ＦＵＬＬ", "a\u0301 e\u0308 combining", "\ufeffbom", "\ufffdreplacement",
]


def run_cpp(tool, vocab_dir, texts, mail=False):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(texts, f)
        name = f.name
    try:
        cmd = [tool, "--vocab", vocab_dir, "--input", name] + (["--mail"] if mail else [])
        r = subprocess.run(cmd, capture_output=True, text=True, errors="surrogateescape")
        if r.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr}")
        return json.loads(r.stdout)
    finally:
        os.unlink(name)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tool")
    ap.add_argument("--data", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".data"))
    ap.add_argument("--mails", type=int, default=600)
    a = ap.parse_args()
    vocab_dir = os.path.join(a.data, "vocab")
    if not os.path.exists(os.path.join(vocab_dir, "vocab.txt")):
        print("check_tokenizer: vocabulary not fetched; 0 passed, 0 failed, 1 skipped")
        return 0
    vocab = {}
    with open(os.path.join(vocab_dir, "vocab.txt"), encoding="utf-8") as f:
        for i, line in enumerate(f):
            vocab.setdefault(line.rstrip("\n").rstrip("\r"), i)
    corpora = [("adversarial", ADVERSARIAL, False)]
    sent = sorted(glob.glob(os.path.join(a.data, "sentiment/package/test/fixtures/*.json")))
    if sent:
        corpora.append(("sentiment", [r["text"] for p in sent for r in json.load(open(p)) if r["text"]], False))
    mails = sorted(glob.glob(os.path.join(a.data, "spam/package/data/*/*.json")))[: a.mails]
    if mails:
        raw = []
        for p in mails:
            t = json.load(open(p, encoding="utf-8", errors="surrogateescape"))["text"]
            raw.append(t.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
        corpora.append(("raw mails", raw, False))
        corpora.append(("cleaned mails", raw, True))
    total = failed = 0
    for name, texts, mail in corpora:
        got = run_cpp(a.tool, vocab_dir, texts, mail)
        bad = 0
        for g in got:
            want = reference_ids(g["text"], vocab)
            if g["ids"] != want:
                bad += 1
                if bad <= 3:
                    print(f"  {name}: {g['text'][:80]!r}\n    C++   {g['ids'][:24]}\n    ref   {want[:24]}")
        total += len(got)
        failed += bad
        print(f"check_tokenizer: {name}: {len(got) - bad} of {len(got)} texts identical")
    print(f"check_tokenizer: {total - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
