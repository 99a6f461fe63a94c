// Entry header for text: the BERT WordPiece tokenizer, the byte-level BPE (RoBERTa) tokenizer, the
// dataset readers and seeded splits, and the mail cleaner (needs utf8proc and iconv; independent of
// the GEMM and the models).
#pragma once
#include "dynabert/text/bpe.hpp"
#include "dynabert/text/datasets.hpp"
#include "dynabert/text/mail.hpp"
#include "dynabert/text/tokenizer.hpp"
