#!/usr/bin/python3
"""A Python reference of the byte-level BPE tokenizer, and its parity check against the C++ one.

The reference follows RobertaTokenizer of Hugging Face transformers v2.1.1 (GPT2Tokenizer's
bytes_to_unicode, pattern and bpe loop; tokenization_utils' split on special tokens with the pieces
stripped; prepare_for_model's longest-first truncation; decode with errors='replace' and no
clean-up of spaces). Two deliberate differences of dynabert's tokenizer are followed here too
(docs/text-and-data.md): text of white space only tokenizes to nothing (v2.1.1 returns one
special token chosen by a Python set's order), and RoBERTa's token types are all 0.
Needs Debian's python3-regex (the `regex` module: \\p{L}, \\p{N}).

    /usr/bin/python3 tools/bpe_reference.py ids DIR [--add-prefix-space] < texts.hex > ids.txt
        one text per input line, as hex of its bytes (read as UTF-8 with errors='replace');
        writes the ids of each text, space-separated, one line per text
    /usr/bin/python3 tools/bpe_reference.py check DRIVER [--data .data] [--stress 3000]
        parity: the sentiment sentences, the cleaned SpamAssassin mails (cleaned by DRIVER, which is
        build/.../tests/bpe_ids) and a generated stress corpus, tokenized by DRIVER and by this
        reference, must give identical ids (and identical decoded text, and identical encodings
        of each text paired with the next, max_length 24). Exits 77 (skipped) when the data or python3-regex is missing, unless CI=true.
"""
import argparse
import glob
import json
import os
import random
import subprocess
import sys
import tempfile

try:
    import regex
except ImportError:  # reported by main()
    regex = None

SPECIALS = ["<s>", "</s>", "<unk>", "<pad>", "<mask>"]
PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def get_pairs(word):
    return set(zip(word, word[1:]))


class Reference:
    def __init__(self, folder, add_prefix_space=False):
        with open(os.path.join(folder, "vocab.json"), encoding="utf-8") as f:
            self.encoder = json.load(f)
        self.decoder = {v: k for k, v in self.encoder.items()}
        with open(os.path.join(folder, "merges.txt"), encoding="utf-8") as f:
            bpe_data = f.read().split("\n")[1:-1]
        self.ranks = dict(zip([tuple(m.split()) for m in bpe_data], range(len(bpe_data))))
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        self.pat = regex.compile(PATTERN)
        self.cache = {}
        self.add_prefix_space = add_prefix_space
        self.unk = self.encoder["<unk>"]
        self.special_ids = {self.encoder.get(t, self.unk) for t in SPECIALS}

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = tuple(token)
        pairs = get_pairs(word)
        if not pairs:
            return [token]
        while True:
            bigram = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if bigram not in self.ranks:
                break
            first, second = bigram
            new_word, i = [], 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new_word.extend(word[i:])
                    break
                new_word.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = get_pairs(word)
        self.cache[token] = list(word)
        return list(word)

    def _tokenize(self, text):
        if self.add_prefix_space:
            text = " " + text
        out = []
        for token in self.pat.findall(text):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            out.extend(self.bpe(token))
        return out

    def tokenize(self, text):
        """tokenization_utils.tokenize: split on each special token in turn, pieces stripped."""
        if not text.strip():
            return []  # (v2.1.1: `if not text`, and a special token for white space only)

        def split_on_token(tok, text):
            result = []
            split_text = text.split(tok)
            for i, sub in enumerate(split_text):
                sub = sub.strip()
                if i == 0 and not sub:
                    result.append(tok)
                elif i == len(split_text) - 1:
                    if sub:
                        result.append(sub)
                else:
                    if sub:
                        result.append(sub)
                    result.append(tok)
            return result

        pieces = [text]
        for tok in SPECIALS:
            nxt = []
            for p in pieces:
                nxt += [p] if p in SPECIALS else split_on_token(tok, p)
            pieces = nxt
        out = []
        for p in pieces:
            out += [p] if p in SPECIALS else self._tokenize(p)
        return out

    def ids(self, text):
        return [self.encoder.get(t, self.unk) for t in self.tokenize(text)]

    def encode(self, a, b=None, max_length=128):
        """prepare_for_model with longest_first truncation, RobertaTokenizer's special tokens."""
        ids, pair = self.ids(a), (self.ids(b) if b is not None else None)
        cls, sep = self.encoder["<s>"], self.encoder["</s>"]
        total = len(ids) + (len(pair) if pair is not None else 0) + (4 if pair is not None else 2)
        for _ in range(max(0, total - max_length)):
            if pair is None or len(ids) > len(pair):
                ids = ids[:-1]
            else:
                pair = pair[:-1]
        if pair is None:
            return [cls] + ids + [sep]
        return [cls] + ids + [sep, sep] + pair + [sep]

    def decode(self, ids, skip_special_tokens=True):
        toks = [self.decoder[i] for i in ids if not (skip_special_tokens and i in self.special_ids)]
        text = "".join(toks)
        data = bytearray()
        for c in text:
            if c in self.byte_decoder:
                data.append(self.byte_decoder[c])
            else:
                data += c.encode("utf-8")
        return data.decode("utf-8", errors="replace")


# ---- corpora -----------------------------------------------------------------------------------
def stress_corpus(n, seed=14):
    """Random Unicode text: CJK, emoji, combining marks, white space runs, other scripts' digits,
    contractions with ' and U+2019, special tokens, leading and trailing spaces, invalid UTF-8."""
    rng = random.Random(seed)
    spaces = [" ", "  ", "\t", "\n", "\r\n", "\r", "\u00a0", "\u2028", "\u2029", "\u3000", "\x0b", "\x0c", "\x1c", "\x1f",
              "\x85", "\u2009", "\u202f", "\u1680", "\u200b", " \n ", "   ", "\t \t"]
    words = ["hello", "World", "don't", "I'M", "we're", "they've", "you'll", "he'd", "it's", "can\u2019t", "'s", "'t",
             "'re", "''", "'", "naïve", "café", "Ångström", "straße", "ΟΔΟΣ", "русский", "עברית", "العربية", "हिन्दी",
             "中文字符", "日本語のテキスト", "한국어", "ﾊﾝｶｸ", "ＦＵＬＬ", "e\u0301", "a\u0308\u0304", "\u0301x", "👍🏽", "😀",
             "👨\u200d👩\u200d👧", "🇫🇷", "١٢٣", "०१२", "０１２", "Ⅻ", "²³", "½", "3.14", "1,000", "$5", "50%", "e-mail",
             "http://a.b/c?d=e", "...", "!!!", "—", "“quoted”", "«x»", "<s>", "</s>", "<mask>", "<pad>", "<unk>", "<s", "s>",
             "</", "<<s>>", "\ufeff", "\ufffd", "\x00", "\x07", "\x7f", "_", "^", "`", "~", "x" * 70, "ab" * 40, "é" * 50,
             "1234567890" * 5, "\U0001F600" * 10, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"]
    texts = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(0, 14)):
            r = rng.random()
            if r < 0.45:
                parts.append(rng.choice(words))
            elif r < 0.75:
                parts.append(rng.choice(spaces))
            elif r < 0.9:  # any code point but surrogates
                c = rng.choice([rng.randint(0x20, 0x2FF), rng.randint(0x300, 0x3000), rng.randint(0x3000, 0xFFFF),
                                rng.randint(0x10000, 0x10FFFF)])
                parts.append(chr(c) if not 0xD800 <= c <= 0xDFFF else "?")
            else:
                parts.append(rng.choice(words).upper())
        t = "".join(parts).encode("utf-8")
        if rng.random() < 0.1:  # invalid UTF-8: stray, truncated, overlong, surrogate, too large
            bad = rng.choice([b"\xff", b"\x80", b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98", b"\xc0\xaf", b"\xed\xa0\x80",
                              b"\xf4\x90\x80\x80", b"\xe0\x80\x80", b"\xfe\xfe"])
            at = rng.randint(0, len(t))
            t = t[:at] + bad + t[at:]
        texts.append(t)
    return texts


def run_driver(driver, args, lines=None):
    with tempfile.NamedTemporaryFile("w", suffix=".hex", delete=False) as f:
        if lines is not None:
            f.write("".join(t.hex() + "\n" for t in lines))
        name = f.name
    try:
        cmd = [driver] + args + (["--input", name] if lines is not None else [])
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr}")
        return r.stdout.split("\n")[:-1]
    finally:
        os.unlink(name)


def skip(msg):
    if os.environ.get("CI", "").lower() == "true":
        print(f"bpe_reference: {msg}; CI=true, so this is a failure")
        return 1
    print(f"bpe_reference: {msg}; skipped")
    return 77


def check(a):
    if regex is None:
        return skip("python3-regex is not installed (scripts/install-deps.sh)")
    folder = os.path.join(a.data, "roberta-bpe")
    if not os.path.exists(os.path.join(folder, "vocab.json")):
        return skip(f"no {folder}/vocab.json: run scripts/fetch-data.sh bpe")
    corpora = []
    sent = sorted(glob.glob(os.path.join(a.data, "sentiment/package/test/fixtures/*.json")))
    if not sent:
        return skip("no sentiment data: run scripts/fetch-data.sh sentiment")
    corpora.append(("sentiment", [r["text"].encode("utf-8") for p in sent for r in json.load(open(p)) if r["text"]]))
    mails_dir = os.path.join(a.data, "spam/package/data")
    if not os.path.isdir(mails_dir):
        return skip("no SpamAssassin data: run scripts/fetch-data.sh spam")
    corpora.append(("cleaned mails", [bytes.fromhex(h) for h in run_driver(a.driver, ["--dump-mails", mails_dir])]))
    corpora.append(("stress", stress_corpus(a.stress)))
    refs = {False: Reference(folder, False), True: Reference(folder, True)}
    total = failed = 0
    for name, texts in corpora:
        for prefix in ([False, True] if name == "stress" else [False]):
            ref = refs[prefix]
            got = run_driver(a.driver, ["--vocab", folder] + (["--add-prefix-space"] if prefix else []), texts)
            if len(got) != len(texts):
                sys.exit(f"bpe_reference: the driver wrote {len(got)} lines for {len(texts)} texts")
            bad = 0
            decoded = [t.decode("utf-8", errors="replace") for t in texts]
            for i, line in enumerate(got):
                ids_s, dec_hex, pair_s = line.split("\t")
                ids = [int(x) for x in ids_s.split()]
                text = decoded[i]
                want = ref.ids(text)
                ok = ids == want and bytes.fromhex(dec_hex).decode("utf-8") == ref.decode(ids, skip_special_tokens=False)
                # each text paired with the next one, max_length 24: truncation on both sides
                ok = ok and [int(x) for x in pair_s.split()] == ref.encode(text, decoded[(i + 1) % len(texts)], 24)
                if not ok:
                    bad += 1
                    if bad <= 3:
                        print(f"  {name}: {text[:80]!r}\n    C++   {ids[:24]}\n    ref   {want[:24]}")
            label = name + (" (add_prefix_space)" if prefix else "")
            print(f"bpe_reference: {label}: {len(texts) - bad} of {len(texts)} texts identical")
            total += len(texts)
            failed += bad
    print(f"bpe_reference: {total - failed} passed, {failed} failed")
    return 1 if failed else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("ids")
    p.add_argument("folder")
    p.add_argument("--add-prefix-space", action="store_true")
    c = sub.add_parser("check")
    c.add_argument("driver")
    c.add_argument("--data", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".data"))
    c.add_argument("--stress", type=int, default=3000)
    a = ap.parse_args()
    if a.mode == "check":
        return check(a)
    if regex is None:
        sys.exit("bpe_reference: needs python3-regex")
    ref = Reference(a.folder, a.add_prefix_space)
    for line in sys.stdin:
        text = bytes.fromhex(line.strip()).decode("utf-8", errors="replace")
        print(" ".join(map(str, ref.ids(text))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
