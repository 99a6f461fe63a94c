// sentence_encoder: a model the library does not ship, composed in this file from its blocks.
//
// An elastic sentence-embedding encoder: word + position embeddings (no token types), N elastic
// encoder layers, mean pooling over each sentence's tokens and L2 normalisation. The two last
// blocks are written here, forward and backward side by side, the same way the library's blocks
// are. It is distilled from a trained BERT teacher (a dynabert_train checkpoint): the student
// learns the teacher's last hidden states (MSE over real tokens) and its mean-pooled, normalised
// sentence embedding, at every (width, depth) cell of each batch, DynaBERT-style, with AdamW. It
// then reports, per cell, the cosine similarity of its embeddings to the teacher's on held-out
// sentences.
//
//   sentence_encoder --teacher out/sentiment/checkpoint [--data .data] [--layers 2] [--epochs 2]
//   sentence_encoder --check-gradients      (finite differences in double on a small random model)
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include <dynabert/text.hpp>
#include <dynabert/training.hpp>

using namespace dynabert;

namespace {

// ---- the user's own blocks ---------------------------------------------------------------------

/// Mean over each sequence's first key_end rows (its tokens), then L2 normalisation:
/// e[b] = m[b] / |m[b]|, m[b] = mean_t h[t].
template <class T>
struct MeanPoolNormalize {
  struct Cache {
    std::vector<T> mean, norm;  ///< [B, H], [B]
  };
  int hidden = 0;
  void forward(T* out, const T* h, const BatchLayout& lay, Cache& c) const {
    const int H = hidden;
    c.mean.assign(static_cast<std::size_t>(lay.batch) * H, T(0));
    c.norm.assign(static_cast<std::size_t>(lay.batch), T(0));
    for (int b = 0; b < lay.batch; ++b) {
      T* m = c.mean.data() + static_cast<long>(b) * H;
      const int n = lay.key_end[b];
      for (int t = 0; t < n; ++t)
        for (int i = 0; i < H; ++i) m[i] += h[static_cast<long>(lay.row_off[b] + t) * H + i];
      T sq = 0;
      for (int i = 0; i < H; ++i) {
        m[i] /= T(n);
        sq += m[i] * m[i];
      }
      c.norm[b] = std::sqrt(sq);
      for (int i = 0; i < H; ++i) out[static_cast<long>(b) * H + i] = m[i] / c.norm[b];
    }
  }
  /// d_h += d(input) from d_out [B, H].
  void backward(T* d_h, const T* d_out, const BatchLayout& lay, const Cache& c) const {
    const int H = hidden;
    for (int b = 0; b < lay.batch; ++b) {
      const T* m = c.mean.data() + static_cast<long>(b) * H;
      const T* d = d_out + static_cast<long>(b) * H;
      const T nrm = c.norm[b];
      T dot = 0;  // d e / d m = (I - e e^T) / |m|
      for (int i = 0; i < H; ++i) dot += d[i] * m[i] / nrm;
      const int n = lay.key_end[b];
      for (int i = 0; i < H; ++i) {
        const T dm = (d[i] - dot * m[i] / nrm) / nrm / T(n);
        for (int t = 0; t < n; ++t) d_h[static_cast<long>(lay.row_off[b] + t) * H + i] += dm;
      }
    }
  }
};

/// Mean squared error over the real tokens' rows of two [rows, H] activations (padding rows of a
/// padded layout are left out); adds weight x gradient to grad.
template <class T>
T token_mse(const T* x, const T* target, const BatchLayout& lay, int H, T* grad, T weight) {
  long count = 0;
  for (int b = 0; b < lay.batch; ++b) count += lay.key_end[b];
  const T denom = T(count) * T(H);
  T loss = 0;
  for (int b = 0; b < lay.batch; ++b)
    for (int t = 0; t < lay.key_end[b]; ++t)
      for (int i = 0; i < H; ++i) {
        const long k = static_cast<long>(lay.row_off[b] + t) * H + i;
        const T d = x[k] - target[k];
        loss += d * d;
        if (grad) grad[k] += weight * T(2) * d / denom;
      }
  return loss / denom;
}

// ---- the model: the library's blocks and the two above -------------------------------------------

struct Shape {
  int vocab = 0, positions = 0, hidden = 0, heads = 0, intermediate = 0, layers = 0;
  Activation act = Activation::kGeluErf;
  double eps = 1e-12, dropout = 0.1;
};

/// One (width, depth) of the student: executed layers, kept heads and neurons per layer.
struct Cell {
  double width = 1, depth = 1;
  std::vector<int> layers;
  int heads = 0, neurons = 0;
};
Cell make_cell(const Shape& s, double width, double depth) {
  Cell c{width, depth, dynabert_layers(s.layers, depth), dynabert_heads(s.heads, width), 0};
  c.neurons = dynabert_neurons(c.heads, s.heads, s.intermediate);
  return c;
}

template <class T>
class SentenceEncoder {
 public:
  using Layer = layers::EncoderLayer<T>;
  /// What a training forward keeps for the backward.
  struct Cache {
    LayoutStorage storage;
    BatchLayout layout;
    std::vector<std::vector<T>> states;  ///< embeddings, then each executed layer
    layers::EmbeddingCache<T> embeddings;
    std::vector<layers::EncoderLayerCache<T>> layers;
    typename MeanPoolNormalize<T>::Cache pool;
    std::vector<T> embedding;  ///< [B, H]
    std::vector<int> executed;
  };

  explicit SentenceEncoder(const Shape& s) : s_(s) {
    Schema schema;
    layers::Embeddings<T>::declare(schema, "encoder.embeddings.", embedding_shape());
    for (int l = 0; l < s.layers; ++l) Layer::declare(schema, prefix(l), layer_shape());
    params_ = ParameterSet<T>(schema);
    grads_ = ParameterSet<T>(schema);
    emb_ = layers::Embeddings<T>(embedding_shape(), layers::Embeddings<T>::tensors(std::as_const(params_), "encoder.embeddings."));
    for (int l = 0; l < s.layers; ++l) layers_.emplace_back(layer_shape(), Layer::tensors(std::as_const(params_), prefix(l)));
    emb_grads_ = layers::Embeddings<T>::tensors(grads_, "encoder.embeddings.");
    for (int l = 0; l < s.layers; ++l) layer_grads_.push_back(Layer::tensors(grads_, prefix(l)));
    pool_.hidden = s.hidden;
  }
  ParameterSet<T>& params() { return params_; }
  ParameterSet<T>& grads() { return grads_; }
  const Shape& shape() const { return s_; }
  /// Packs the weights for the GEMM: after every change of the parameters.
  void pack() {
    for (auto& l : layers_) l.pack(true);
  }
  void set_threads(int n) { threads_ = Threads(n); }

  /// Embeddings [B, H] of `in` at `cell` (training when rng is given: dropout on).
  const std::vector<T>& forward(const Inputs& in, const Cell& cell, Cache& c, std::mt19937_64* rng) {
    check_inputs(in);
    emb_.check(in);
    c.storage.reserve(in.batch, in.seq_len);
    c.layout = plan_batch(in, false, c.storage);
    const auto& lay = c.layout;
    const std::size_t n = static_cast<std::size_t>(lay.rows) * s_.hidden;
    auto key = [&] { return rng ? kernels::DropoutKey::make(s_.dropout, (*rng)()) : kernels::DropoutKey{}; };
    const auto comp = compute(in.seq_len);
    c.executed = cell.layers;
    c.states.resize(cell.layers.size() + 1);
    c.layers.resize(cell.layers.size());
    for (auto& st : c.states) st.resize(n);
    a_.resize(n);
    emb_.forward(c.states[0].data(), in, lay, key(), c.embeddings, comp);
    for (std::size_t i = 0; i < cell.layers.size(); ++i) {
      layers::LayerDropout drop{key(), key(), key()};
      layers_[cell.layers[i]].forward(c.states[i + 1].data(), c.states[i].data(), lay, {cell.heads, cell.neurons, nullptr}, drop,
                                      c.layers[i], a_.data(), attention_buffers(in.seq_len), comp);
    }
    c.embedding.resize(static_cast<std::size_t>(in.batch) * s_.hidden);
    pool_.forward(c.embedding.data(), c.states.back().data(), lay, c.pool);
    return c.embedding;
  }

  /// grads += d(loss) from d_embedding [B, H] and d_last [rows, H] (either may be null).
  void backward(const Cache& c, const T* d_embedding, const T* d_last) {
    const auto& lay = c.layout;
    const std::size_t n = static_cast<std::size_t>(lay.rows) * s_.hidden;
    const auto comp = compute(lay.seq);
    dh_.assign(n, T(0));
    dx_.resize(n);
    da_.resize(n);
    dh1_.resize(n);
    if (d_last) ops::add(dh_.data(), d_last, n);
    if (d_embedding) pool_.backward(dh_.data(), d_embedding, lay, c.pool);
    for (std::size_t i = c.executed.size(); i-- > 0;) {
      const int l = c.executed[i];
      layers_[l].backward(dx_.data(), dh_.data(), c.states[i].data(), lay, c.layers[i], layer_grads_[l], nullptr, da_.data(),
                          dh1_.data(), attention_buffers(lay.seq), comp);
      std::swap(dh_, dx_);
    }
    emb_.backward(dh_.data(), lay, c.embeddings, emb_grads_, comp);
  }

 private:
  layers::EmbeddingShape embedding_shape() const { return {s_.vocab, s_.positions, 0, s_.hidden, s_.eps, 0}; }
  layers::EncoderLayerShape layer_shape() const {
    return {{s_.hidden, s_.heads, s_.hidden / s_.heads}, {s_.hidden, s_.intermediate, s_.act}, s_.eps};
  }
  static std::string prefix(int l) { return "encoder.layers." + std::to_string(l) + "."; }
  layers::Compute compute(int seq) {
    gemm_.ensure(static_cast<std::size_t>(threads_.count()) * kernels::gemm_scratch_floats());
    attn_.ensure(static_cast<std::size_t>(threads_.count()) * layers::SelfAttention<T>::scratch_size(seq, s_.hidden / s_.heads, true));
    return {&threads_, gemm_.data(), &scratch_};
  }
  layers::AttentionBuffers<T> attention_buffers(int seq) {
    return {nullptr, 0, nullptr, 0, attn_.data(), layers::SelfAttention<T>::scratch_size(seq, s_.hidden / s_.heads, true)};
  }

  Shape s_;
  ParameterSet<T> params_, grads_;
  layers::Embeddings<T> emb_;
  std::vector<Layer> layers_;
  typename layers::Embeddings<T>::Grads emb_grads_;
  std::vector<typename Layer::Grads> layer_grads_;
  MeanPoolNormalize<T> pool_;
  Threads threads_;
  AlignedBuffer<float> gemm_;
  AlignedBuffer<T> attn_;
  layers::TrainScratch scratch_;
  std::vector<T> a_, dh_, dx_, da_, dh1_;
};

/// The distillation loss of one cell: MSE of the embeddings + lambda x MSE of the last hidden
/// states over real tokens. Fills the gradients (zeroed first).
template <class T>
T distill_loss(const typename SentenceEncoder<T>::Cache& c, const std::vector<T>& teacher_embedding,
               const std::vector<T>& teacher_last, int H, double lambda, std::vector<T>& d_emb, std::vector<T>& d_last) {
  d_emb.assign(c.embedding.size(), T(0));
  d_last.assign(c.states.back().size(), T(0));
  T loss = layers::mse(c.embedding.data(), teacher_embedding.data(), static_cast<long>(c.embedding.size()), d_emb.data());
  loss += static_cast<T>(lambda) *
          token_mse(c.states.back().data(), teacher_last.data(), c.layout, H, d_last.data(), static_cast<T>(lambda));
  return loss;
}

// ---- the finite-difference check of the whole composition, in double ---------------------------
int check_gradients() {
  Shape s{31, 12, 16, 4, 24, 3};
  SentenceEncoder<double> m(s);
  std::mt19937_64 g(7);
  std::normal_distribution<double> nd(0.0, 0.3);
  for (auto& sp : m.params().specs()) {
    double* v = m.params().tensor(sp.name);
    const bool gamma = sp.name.find("LayerNorm.weight") != std::string::npos;
    for (std::size_t i = 0; i < sp.numel(); ++i) v[i] = gamma ? 1.0 + nd(g) : nd(g);
  }
  m.pack();
  const int B = 3, S = 6, H = s.hidden;
  std::vector<std::int32_t> ids(B * S), lengths = {6, 3, 5};
  for (auto& v : ids) v = static_cast<std::int32_t>(g() % s.vocab);
  Inputs in;
  in.input_ids = ids.data(); in.lengths = lengths.data(); in.batch = B; in.seq_len = S;
  std::vector<double> t_emb(B * H), t_last(B * S * H), d_emb, d_last;
  for (auto& v : t_emb) v = nd(g);
  for (auto& v : t_last) v = nd(g);
  int passed = 0, failed = 0;
  for (double width : {1.0, 0.5})
    for (double depth : {1.0, 2.0 / 3}) {
      const Cell cell = make_cell(s, width, depth);
      const std::uint64_t seed = 11;
      SentenceEncoder<double>::Cache c;
      auto loss = [&] {  // dropout on, the same masks every time
        std::mt19937_64 rng(seed);
        SentenceEncoder<double>::Cache cc;
        m.forward(in, cell, cc, &rng);
        std::vector<double> a, b;
        return distill_loss(cc, t_emb, t_last, H, 0.5, a, b);
      };
      std::mt19937_64 rng(seed);
      m.forward(in, cell, c, &rng);
      distill_loss(c, t_emb, t_last, H, 0.5, d_emb, d_last);
      m.grads().fill_zero();
      m.backward(c, d_emb.data(), d_last.data());
      for (auto& sp : m.params().specs())
        for (int trial = 0; trial < 3; ++trial) {
          const std::size_t i = g() % sp.numel();
          double* p = m.params().view(sp.name) + i;
          const double old = *p;
          *p = old + 1e-6; const double up = loss();
          *p = old - 1e-6; const double down = loss();
          *p = old;
          const double num = (up - down) / 2e-6, ana = m.grads().view(sp.name)[i];
          const bool ok = std::abs(num - ana) <= 1e-5 * (std::abs(num) + std::abs(ana)) || std::abs(num - ana) < 1e-8;
          (ok ? passed : failed) += 1;
          if (!ok) std::printf("MISMATCH %s[%zu] cell (%.2f, %.2f): numeric %.9g analytic %.9g\n", sp.name.c_str(), i, width, depth, num, ana);
        }
    }
  std::printf("gradient check of the sentence encoder (double): %d passed, %d failed\n", passed, failed);
  return failed == 0 && passed > 0 ? 0 : 1;
}

double cosine(const float* a, const float* b, int n) {
  double ab = 0, aa = 0, bb = 0;
  for (int i = 0; i < n; ++i) { ab += a[i] * b[i]; aa += a[i] * a[i]; bb += b[i] * b[i]; }
  return ab / std::sqrt(aa * bb + 1e-30);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"A sentence-embedding encoder composed from dynabert's blocks, distilled from a BERT teacher"};
  std::string teacher_dir, data = ".data";
  int student_layers = 2, epochs = 2, batch = 32, max_len = 64, threads = 2;
  double lr = 1e-3, lambda = 1.0;
  bool check = false;
  app.add_option("--teacher", teacher_dir, "trained BERT checkpoint (config.json, model.safetensors, vocab.txt)");
  app.add_option("--data", data, "folder filled by scripts/fetch-data.sh (the sentiment sentences)");
  app.add_option("--layers", student_layers, "student layers")->check(CLI::Range(1, 48));
  app.add_option("--epochs", epochs)->check(CLI::Range(1, 1000));
  app.add_option("--batch", batch)->check(CLI::Range(1, 4096));
  app.add_option("--threads", threads)->check(CLI::Range(1, 256));
  app.add_option("--lr", lr)->check(CLI::PositiveNumber);
  app.add_option("--lambda", lambda, "weight of the hidden-state loss")->check(CLI::NonNegativeNumber);
  app.add_flag("--check-gradients", check, "finite-difference check of the composition in double, then exit");
  CLI11_PARSE(app, argc, argv);
  try {
    if (check) return check_gradients();
    DYNABERT_REQUIRE(!teacher_dir.empty(), InputError, "--teacher is required (or --check-gradients)");
    const auto tw = BertWeights<float>::load(teacher_dir);
    const auto& tc = tw.config();
    const ElasticBert<float> teacher(tw);
    const auto tok = text::BertTokenizer::from_folder(teacher_dir);
    std::vector<std::string> texts;
    for (const char* f : {"amazon", "imdb", "yelp"})
      for (auto& r : text::read_sentiment_json(data + "/sentiment/package/test/fixtures/" + f + ".json")) texts.push_back(r.text);
    const auto sp = text::split(texts.size(), 0.9, 0.0, 1);
    std::vector<std::vector<std::int32_t>> train_ids, test_ids;
    for (auto i : sp.train) train_ids.push_back(tok.encode(texts[i], std::nullopt, max_len).ids);
    for (auto i : sp.test) test_ids.push_back(tok.encode(texts[i], std::nullopt, max_len).ids);

    Shape s{tc.vocab_size, tc.max_position_embeddings, tc.hidden_size, tc.num_attention_heads, tc.intermediate_size,
            student_layers, tc.hidden_act, tc.layer_norm_eps, 0.1};
    SentenceEncoder<float> student(s);
    student.set_threads(threads);
    {  // start from the teacher's embeddings and its first layers
      auto& p = student.params();
      auto copy = [&](const std::string& from, const std::string& to) {
        std::copy_n(tw.tensor(from), tw.spec(from).numel(), p.tensor(to));
      };
      for (const char* t : {"word_embeddings.weight", "position_embeddings.weight", "LayerNorm.weight", "LayerNorm.bias"})
        copy(std::string("embeddings.") + t, std::string("encoder.embeddings.") + t);
      for (auto& spec : p.specs()) {
        const std::string pre = "encoder.layers.";
        if (spec.name.rfind(pre, 0) != 0) continue;
        const std::string rest = spec.name.substr(pre.size());
        const int l = std::stoi(rest);
        const int tl = std::min(tc.num_hidden_layers - 1, l * tc.num_hidden_layers / student_layers);
        copy("encoder.layer." + std::to_string(tl) + rest.substr(rest.find('.')), spec.name);
      }
    }
    student.pack();
    std::vector<Cell> cells;
    for (double d : {1.0, 0.5})
      for (double w : {1.0, 0.5, 0.25}) cells.push_back(make_cell(s, w, d));
    train::AdamW<float> opt(student.params(), train::AdamWConfig{lr});
    std::mt19937_64 rng(5);

    // a padded batch of sentences and the teacher's outputs on it
    struct Padded {
      std::vector<std::int32_t> ids, lengths;
      Inputs in;
    };
    auto pad = [&](const std::vector<std::vector<std::int32_t>>& all, std::size_t from, std::size_t n) {
      Padded p;
      int S = 0;
      for (std::size_t i = from; i < from + n; ++i) S = std::max<int>(S, static_cast<int>(all[i].size()));
      p.ids.assign(n * S, 0);
      for (std::size_t i = 0; i < n; ++i) {
        std::copy(all[from + i].begin(), all[from + i].end(), p.ids.begin() + i * S);
        p.lengths.push_back(static_cast<std::int32_t>(all[from + i].size()));
      }
      p.in.input_ids = p.ids.data(); p.in.lengths = p.lengths.data(); p.in.batch = static_cast<int>(n); p.in.seq_len = S;
      return p;
    };
    auto tws = teacher.make_workspace({batch, max_len, threads});
    const Threads th(threads);
    MeanPoolNormalize<float> pool{tc.hidden_size};
    auto teacher_outputs = [&](const Padded& p, std::vector<float>& last, std::vector<float>& emb) {
      last.resize(static_cast<std::size_t>(p.in.batch) * p.in.seq_len * tc.hidden_size);
      emb.resize(static_cast<std::size_t>(p.in.batch) * tc.hidden_size);
      Outputs o;
      o.last_hidden = last.data();
      teacher.forward(p.in, SubNetwork::full(tc), o, tws, th);
      LayoutStorage st(p.in.batch, p.in.seq_len);
      typename MeanPoolNormalize<float>::Cache pc;
      pool.forward(emb.data(), last.data(), plan_batch(p.in, false, st), pc);
    };

    SentenceEncoder<float>::Cache cache;
    std::vector<float> t_last, t_emb, d_emb, d_last;
    const long steps = static_cast<long>((train_ids.size() + batch - 1) / batch) * epochs;
    long step = 0;
    const auto start = std::chrono::steady_clock::now();
    for (int e = 0; e < epochs; ++e)
      for (std::size_t from = 0; from < train_ids.size(); from += batch) {
        const auto p = pad(train_ids, from, std::min<std::size_t>(batch, train_ids.size() - from));
        teacher_outputs(p, t_last, t_emb);
        student.grads().fill_zero();
        double loss = 0;
        for (const auto& cell : cells) {  // every cell of the batch, summed before one step
          student.forward(p.in, cell, cache, &rng);
          loss += distill_loss(cache, t_emb, t_last, s.hidden, lambda, d_emb, d_last);
          student.backward(cache, d_emb.data(), d_last.data());
        }
        train::clip_grad_norm(student.grads(), 1.0, th);
        opt.step(student.params(), student.grads(), lr * (1.0 - static_cast<double>(step) / steps), th);
        student.pack();
        ++step;
        if (step % 10 == 0 || step == steps) {
          const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
          std::fprintf(stderr, "\rstep %4ld/%ld  loss %.4f (summed over %zu cells)  %.1f sentences/s  ETA %.0f s   ", step, steps,
                       loss, cells.size(), step * static_cast<double>(batch) / secs, secs / step * (steps - step));
        }
      }
    std::fprintf(stderr, "\n");
    // held-out sentences: cosine of the student's embedding to the teacher's, per cell
    std::printf("| width | depth | heads | FFN | layers | cosine to the teacher (held-out, mean) |\n|---:|---:|---:|---:|---:|---:|\n");
    for (const auto& cell : cells) {
      double sum = 0;
      long n = 0;
      for (std::size_t from = 0; from < test_ids.size(); from += batch) {
        const auto p = pad(test_ids, from, std::min<std::size_t>(batch, test_ids.size() - from));
        teacher_outputs(p, t_last, t_emb);
        const auto& emb = student.forward(p.in, cell, cache, nullptr);
        for (int b = 0; b < p.in.batch; ++b, ++n)
          sum += cosine(emb.data() + static_cast<long>(b) * s.hidden, t_emb.data() + static_cast<long>(b) * s.hidden, s.hidden);
      }
      std::printf("| %.2f | %.2f | %d | %d | %zu | %.4f |\n", cell.width, cell.depth, cell.heads, cell.neurons, cell.layers.size(), sum / n);
    }
  } catch (const std::exception& e) {  // dynabert::Error with its message, or the system's
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
