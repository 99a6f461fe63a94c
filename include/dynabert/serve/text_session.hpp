// TextSession: a Session and its tokenizer (WordPiece for BERT, byte-level BPE for RoBERTa: the
// checkpoint folder's files decide), for host programs that start from text:
// classify and embed a list of texts in one call, at a cell or under a latency budget.
//
//   auto s = dynabert::TextSession::open("my-checkpoint/");
//   auto r = s->classify({"The food was wonderful.", "Never again."}, /*width=*/0.5, /*depth=*/0.75);
//   // r.names[i], r.probability(i, label), r.ms
//   auto v = s->embed({"a sentence", "another"}, dynabert::Pooling::kMean);  // [2, hidden], L2-normalised
//
// Texts are tokenized as one padded batch (Tokenizer::encode_batch, truncated to the session's
// max_seq_len) and run in chunks of max_batch. Included by the umbrella header dynabert.hpp (it
// needs the text stack, which inference.hpp does not pull).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "dynabert/serve/session.hpp"
#include "dynabert/text/any_tokenizer.hpp"

namespace dynabert {

/// Throws FormatError when `tok` can produce ids the model of `config` has no embedding for.
inline void check_tokenizer_fits(const text::Tokenizer& tok, const BertConfig& config) {
  DYNABERT_REQUIRE(tok.vocab_size() <= config.vocab_size, FormatError, "the tokenizer has ", tok.vocab_size(),
                   " tokens but the model embeds ", config.vocab_size, ": is it the model's own vocabulary?");
}

class TextSession {
 public:
  /// Throws FormatError when the tokenizer can produce ids the model has no embedding for.
  TextSession(std::unique_ptr<Session<float>> session, text::Tokenizer tokenizer)
      : session_(std::move(session)), tok_(std::move(tokenizer)) {
    check_tokenizer_fits(tok_, session_->config());
  }

  /// Loads a checkpoint folder and the tokenizer files in it (or in `vocab_dir`).
  static std::unique_ptr<TextSession> open(const std::string& dir, SessionOptions opt = {}, const std::string& vocab_dir = "") {
    auto s = Session<float>::open(dir, std::move(opt));
    return std::make_unique<TextSession>(std::move(s), text::Tokenizer::from_folder(vocab_dir.empty() ? dir : vocab_dir));
  }

  Session<float>& session() { return *session_; }
  const Session<float>& session() const { return *session_; }
  const text::Tokenizer& tokenizer() const { return tok_; }

  /// The texts as one padded batch of at most max_seq_len tokens each.
  TokenBatch encode(const std::vector<std::string>& texts) const {
    return tok_.encode_batch(texts, session_->options().max_seq_len);
  }

  Classification classify(const std::vector<std::string>& texts, double width = 1.0, double depth = 1.0,
                          const Threads& threads = Threads()) const {
    return session_->classify(encode(texts), width, depth, threads);
  }
  Classification classify(const std::vector<std::string>& texts, const SubNetwork& net, const Threads& threads = Threads()) const {
    return session_->classify(encode(texts), net, threads);
  }
  /// Under a latency budget per chunk (call session().calibrate() first).
  Classification classify_within(const std::vector<std::string>& texts, double budget_ms, const Threads& threads = Threads()) {
    return session_->classify_within(encode(texts), budget_ms, threads);
  }

  /// Per-sample early exit over `cells` (cheapest first): see Session::classify_early_exit.
  Classification classify_early_exit(const std::vector<std::string>& texts, const std::vector<std::pair<double, double>>& cells,
                                     double threshold, const Threads& threads = Threads()) const {
    return session_->classify_early_exit(encode(texts), cells, threshold, threads);
  }

  /// One vector per text ([texts, hidden], row-major).
  std::vector<float> embed(const std::vector<std::string>& texts, Pooling pooling = Pooling::kMean, bool normalize = true,
                           double width = 1.0, double depth = 1.0, const Threads& threads = Threads()) const {
    return session_->embed(encode(texts), width, depth, pooling, normalize, threads);
  }

 private:
  std::unique_ptr<Session<float>> session_;
  text::Tokenizer tok_;
};

}  // namespace dynabert
