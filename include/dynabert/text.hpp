// Entry header for text: the BERT WordPiece tokenizer, the byte-level BPE (RoBERTa) tokenizer,
// text::Tokenizer (either, chosen by a checkpoint folder's files), the dataset readers and seeded
// splits, and the mail cleaner (needs utf8proc and iconv; independent of
// the GEMM and the models).
#pragma once
#include "dynabert/text/any_tokenizer.hpp"
#include "dynabert/text/bpe.hpp"
#include "dynabert/text/datasets.hpp"
#include "dynabert/text/mail.hpp"
#include "dynabert/text/tokenizer.hpp"
