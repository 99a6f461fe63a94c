// BertConfig: the run-time architecture read from (and written to) Hugging Face config.json. The
// compile-time dimension policies (StaticDims / DynamicDims) are in layers/dims.hpp.
#pragma once
#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "dynabert/core/error.hpp"
#include "dynabert/io/json.hpp"
#include "dynabert/kernels/activation.hpp"
#include "dynabert/layers/dims.hpp"

namespace dynabert {

/// The encoder family a checkpoint holds (config.json's `model_type`). Families share every block;
/// they differ in the embedding positions, the heads and the checkpoint names (FamilyNames).
enum class ModelType { kBert, kRoberta };

/// What differs between the families outside the config's sizes: the Hugging Face tensor names of
/// the heads, the encoder's prefix in task checkpoints, the head's dropout and the class names.
///  - BERT:    pooler.dense (tanh on [CLS]) -> classifier; MLM head cls.predictions.transform.*;
///  - RoBERTa: RobertaClassificationHead = classifier.dense (dropout, dense, tanh on <s>) ->
///             classifier.out_proj; MLM head lm_head.{dense, layer_norm, bias}. A RobertaModel's own
///             pooler.dense is not used by either head and is not loaded.
struct FamilyNames {
  const char* type;             ///< config.json model_type
  const char* encoder_prefix;   ///< prefix of the encoder's tensors in task checkpoints
  const char* pooler;           ///< dense + tanh on the first token
  const char* classifier;       ///< the output projection
  const char* mlm;              ///< MLM head prefix
  const char* mlm_dense;        ///< under `mlm`
  const char* mlm_norm;         ///< under `mlm`
  bool pooler_input_dropout;    ///< dropout on the first token before `pooler` (training)
  bool mlm_erf_gelu;            ///< the MLM head's activation is always erf GELU (else hidden_act)
  const char* base_class;       ///< architectures: the bare encoder
  const char* classify_class;   ///< architectures: with a classification head
  const char* mlm_class;        ///< architectures: with an MLM head
};

inline const FamilyNames& family_names(ModelType t) {
  static const FamilyNames bert{"bert", "bert.", "pooler.dense.", "classifier.", "cls.predictions.", "transform.dense.",
                                "transform.LayerNorm.", false, false, "BertModel", "BertForSequenceClassification", "BertForMaskedLM"};
  static const FamilyNames roberta{"roberta", "roberta.", "classifier.dense.", "classifier.out_proj.", "lm_head.", "dense.",
                                   "layer_norm.", true, true, "RobertaModel", "RobertaForSequenceClassification",
                                   "RobertaForMaskedLM"};
  return t == ModelType::kRoberta ? roberta : bert;
}

/// Architecture of a BERT encoder (the fields of Hugging Face's BertConfig that matter here).
/// config.json values outside the kMax* limits are refused when read (they exceed any model a
/// machine could hold, and would otherwise decide allocations before a tensor is checked).
struct BertConfig {
  static constexpr int kMaxVocab = 1 << 24, kMaxHidden = 1 << 16, kMaxLayers = 1024, kMaxHeads = 4096,
                       kMaxIntermediate = 1 << 20, kMaxPositions = 1 << 20, kMaxTypes = 1 << 16, kMaxLabels = 1 << 16;
  ModelType model_type = ModelType::kBert;
  int vocab_size = 30522;
  int hidden_size = 768;
  int num_hidden_layers = 12;
  int num_attention_heads = 12;
  int intermediate_size = 3072;
  int max_position_embeddings = 512;
  int type_vocab_size = 2;
  int pad_token_id = 0;
  double layer_norm_eps = 1e-12;
  Activation hidden_act = Activation::kGeluErf;
  double hidden_dropout_prob = 0.1;
  double attention_probs_dropout_prob = 0.1;
  /// Labels of the classification head; one label means regression (Hugging Face convention).
  std::vector<std::string> id2label;
  /// Heads removed per layer (Hugging Face `pruned_heads`), sorted original head ids.
  std::map<int, std::vector<int>> pruned_heads;
  /// Per-layer FFN width when layers differ (dynabert extension `dynabert_intermediate_sizes`);
  /// empty means every layer has `intermediate_size`.
  std::vector<int> layer_intermediate_sizes;

  int head_dim() const { return hidden_size / num_attention_heads; }
  const FamilyNames& names() const { return family_names(model_type); }
  /// Position of a sequence's first token: 0 for BERT; padding_idx + 1 for RoBERTa (the reference
  /// implementation's rule in transformers v2.1.1: positions 2, 3, ... for every sequence).
  int position_offset() const { return model_type == ModelType::kRoberta ? pad_token_id + 1 : 0; }
  /// Longest sequence the position table holds: max_position_embeddings minus the offset (512 for
  /// roberta-base's 514 positions).
  int max_tokens() const { return max_position_embeddings - position_offset(); }
  int num_labels() const { return static_cast<int>(id2label.size()); }
  /// Heads stored for layer l (num_attention_heads minus pruned ones).
  int layer_heads(int l) const {
    auto it = pruned_heads.find(l);
    return num_attention_heads - (it == pruned_heads.end() ? 0 : static_cast<int>(it->second.size()));
  }
  /// FFN neurons stored for layer l.
  int layer_intermediate(int l) const {
    return layer_intermediate_sizes.empty() ? intermediate_size : layer_intermediate_sizes[l];
  }
  int max_layer_heads() const {
    int m = 0;
    for (int l = 0; l < num_hidden_layers; ++l) m = std::max(m, layer_heads(l));
    return m;
  }
  int max_layer_intermediate() const {
    int m = 0;
    for (int l = 0; l < num_hidden_layers; ++l) m = std::max(m, layer_intermediate(l));
    return m;
  }

  /// Throws FormatError (naming `source`) if the sizes are inconsistent.
  void validate(const std::string& source = "config") const {
    auto pos = [&](int v, const char* name) {
      DYNABERT_REQUIRE(v > 0, FormatError, source, ": ", name, " must be positive, got ", v);
    };
    pos(vocab_size, "vocab_size");
    pos(hidden_size, "hidden_size");
    pos(num_hidden_layers, "num_hidden_layers");
    pos(num_attention_heads, "num_attention_heads");
    pos(intermediate_size, "intermediate_size");
    pos(max_position_embeddings, "max_position_embeddings");
    pos(type_vocab_size, "type_vocab_size");
    DYNABERT_REQUIRE(pad_token_id >= 0 && pad_token_id < vocab_size, FormatError, source, ": pad_token_id ", pad_token_id,
                     " is outside the vocabulary (0..", vocab_size - 1, ")");
    DYNABERT_REQUIRE(position_offset() < max_position_embeddings, FormatError, source, ": max_position_embeddings ",
                     max_position_embeddings, " leaves no position after the offset ", position_offset(),
                     " (RoBERTa's positions start at pad_token_id + 1)");
    DYNABERT_REQUIRE(hidden_size % num_attention_heads == 0, FormatError, source,
                     ": hidden_size ", hidden_size, " is not a multiple of num_attention_heads ",
                     num_attention_heads);
    DYNABERT_REQUIRE(layer_norm_eps > 0, FormatError, source, ": layer_norm_eps must be positive");
    for (auto& [l, heads] : pruned_heads) {
      DYNABERT_REQUIRE(l >= 0 && l < num_hidden_layers, FormatError, source,
                       ": pruned_heads names layer ", l, " of ", num_hidden_layers);
      std::set<int> uniq(heads.begin(), heads.end());
      DYNABERT_REQUIRE(uniq.size() == heads.size(), FormatError, source,
                       ": pruned_heads of layer ", l, " repeats a head");
      for (int h : heads)
        DYNABERT_REQUIRE(h >= 0 && h < num_attention_heads, FormatError, source,
                         ": pruned_heads of layer ", l, " names head ", h);
      DYNABERT_REQUIRE(layer_heads(l) >= 1, FormatError, source, ": pruned_heads removes every head of layer ", l);
    }
    if (!layer_intermediate_sizes.empty()) {
      DYNABERT_REQUIRE(static_cast<int>(layer_intermediate_sizes.size()) == num_hidden_layers,
                       FormatError, source, ": dynabert_intermediate_sizes has ",
                       layer_intermediate_sizes.size(), " entries for ", num_hidden_layers, " layers");
      for (int v : layer_intermediate_sizes) pos(v, "dynabert_intermediate_sizes[i]");
    }
  }

  /// Parses a Hugging Face config.json object. Unknown keys are ignored; `source` names the file
  /// in error messages.
  static BertConfig from_json(const io::Json& j, const std::string& source = "config.json") {
    DYNABERT_REQUIRE(j.is_object(), FormatError, source, ": top level is not a JSON object");
    BertConfig c;
    auto field = [&](const char* key) -> const io::Json* {  // null when absent or JSON null
      const io::Json* v = j.find(key);
      return v && !v->is_null() ? v : nullptr;
    };
    // every integer is range-checked: no silent narrowing, and sizes a machine could hold
    auto get_int = [&](const char* key, int& out, long long lo, long long hi) {
      if (const io::Json* v = field(key)) out = static_cast<int>(io::json_int(*v, source, std::string("field '") + key + "'", lo, hi));
    };
    auto get_double = [&](const char* key, double& out) {
      const io::Json* v = field(key);
      if (!v) return;
      DYNABERT_REQUIRE(v->is_number(), FormatError, source, ": field '", key, "' must be a number");
      out = v->as_double();
    };
    if (const io::Json* v = field("model_type")) {
      DYNABERT_REQUIRE(v->is_string(), FormatError, source, ": field 'model_type' must be a string");
      const auto& t = v->as_string();
      if (t == "bert") c.model_type = ModelType::kBert;
      else if (t == "roberta") c.model_type = ModelType::kRoberta;
      else raise<FormatError>(source, ": model_type '", t, "' is not supported (bert, roberta)");
    } else if (const io::Json* a = field("architectures"); a && a->is_array()) {  // configs older than model_type
      for (const auto& e : a->elements())
        if (e.is_string() && e.as_string().rfind("Roberta", 0) == 0) c.model_type = ModelType::kRoberta;
    }
    // RobertaConfig's default: the padding id 1 that its positions start after
    if (c.model_type == ModelType::kRoberta) c.pad_token_id = 1;
    get_int("vocab_size", c.vocab_size, 1, kMaxVocab);
    get_int("hidden_size", c.hidden_size, 1, kMaxHidden);
    get_int("num_hidden_layers", c.num_hidden_layers, 1, kMaxLayers);
    get_int("num_attention_heads", c.num_attention_heads, 1, kMaxHeads);
    get_int("intermediate_size", c.intermediate_size, 1, kMaxIntermediate);
    get_int("max_position_embeddings", c.max_position_embeddings, 1, kMaxPositions);
    get_int("type_vocab_size", c.type_vocab_size, 1, kMaxTypes);
    get_int("pad_token_id", c.pad_token_id, 0, kMaxVocab - 1);
    get_double("layer_norm_eps", c.layer_norm_eps);
    get_double("hidden_dropout_prob", c.hidden_dropout_prob);
    get_double("attention_probs_dropout_prob", c.attention_probs_dropout_prob);
    if (const io::Json* v = j.find("hidden_act")) {
      DYNABERT_REQUIRE(v->is_string(), FormatError, source, ": field 'hidden_act' must be a string");
      const auto& act = v->as_string();
      if (act == "gelu") c.hidden_act = Activation::kGeluErf;
      else if (act == "gelu_new" || act == "gelu_pytorch_tanh" || act == "gelu_fast")
        c.hidden_act = Activation::kGeluTanh;
      else raise<FormatError>(source, ": hidden_act '", act, "' is not supported (gelu, gelu_new)");
    }
    if (const io::Json* m = j.find("id2label")) {
      DYNABERT_REQUIRE(m->is_object(), FormatError, source, ": id2label must be an object");
      DYNABERT_REQUIRE(m->size() <= static_cast<std::size_t>(kMaxLabels), FormatError, source, ": id2label has ", m->size(),
                       " labels; at most ", kMaxLabels);
      c.id2label.assign(m->size(), "");
      std::vector<bool> seen(m->size(), false);
      for (const auto& [key, name] : m->members()) {
        int id = -1;
        try { id = std::stoi(key); } catch (...) {}
        DYNABERT_REQUIRE(id >= 0 && id < static_cast<int>(m->size()) && std::to_string(id) == key && !seen[id], FormatError,
                         source, ": id2label key '", key, "' is not an id in 0..", m->size() - 1);
        seen[id] = true;
        c.id2label[id] = name.is_string() ? name.as_string() : name.dump();
      }
    } else if (field("num_labels")) {
      int n = 0;
      get_int("num_labels", n, 0, kMaxLabels);
      for (int i = 0; i < n; ++i) c.id2label.push_back("LABEL_" + std::to_string(i));
    }
    if (const io::Json* m = field("pruned_heads")) {
      DYNABERT_REQUIRE(m->is_object(), FormatError, source, ": pruned_heads must be an object");
      for (const auto& [key, list] : m->members()) {
        int layer = -1;
        try { layer = std::stoi(key); } catch (...) {}
        DYNABERT_REQUIRE(layer >= 0 && std::to_string(layer) == key, FormatError, source, ": pruned_heads key '", key,
                         "' is not a layer number");
        DYNABERT_REQUIRE(list.is_array(), FormatError, source, ": pruned_heads['", key, "'] must be a list");
        std::vector<int> heads;
        for (const auto& h : list.elements())
          heads.push_back(static_cast<int>(io::json_int(h, source, "pruned_heads['" + key + "']", 0, kMaxHeads)));
        std::sort(heads.begin(), heads.end());
        if (!heads.empty()) c.pruned_heads[layer] = heads;
      }
    }
    if (const io::Json* a = j.find("dynabert_intermediate_sizes")) {
      DYNABERT_REQUIRE(a->is_array(), FormatError, source, ": dynabert_intermediate_sizes must be a list");
      DYNABERT_REQUIRE(a->size() <= static_cast<std::size_t>(kMaxLayers), FormatError, source, ": dynabert_intermediate_sizes has ",
                       a->size(), " entries");
      for (const auto& v : a->elements())
        c.layer_intermediate_sizes.push_back(static_cast<int>(io::json_int(v, source, "dynabert_intermediate_sizes[i]", 1, kMaxIntermediate)));
    }
    c.validate(source);
    return c;
  }

  /// Reads and parses a config.json file.
  static BertConfig from_file(const std::string& path) {
    return from_json(io::read_json_file(path), path);
  }

  /// A Hugging Face compatible config.json object.
  io::Json to_json() const {
    io::Json j = io::Json::object();
    j["model_type"] = names().type;
    j["architectures"] = std::vector<std::string>{num_labels() > 0 ? names().classify_class : names().base_class};
    j["vocab_size"] = vocab_size;
    j["hidden_size"] = hidden_size;
    j["num_hidden_layers"] = num_hidden_layers;
    j["num_attention_heads"] = num_attention_heads;
    j["intermediate_size"] = intermediate_size;
    j["max_position_embeddings"] = max_position_embeddings;
    j["type_vocab_size"] = type_vocab_size;
    j["pad_token_id"] = pad_token_id;
    if (model_type == ModelType::kRoberta) {  // RobertaConfig's special ids (<s> 0, </s> 2)
      j["bos_token_id"] = 0;
      j["eos_token_id"] = 2;
    }
    j["layer_norm_eps"] = layer_norm_eps;
    j["hidden_act"] = to_string(hidden_act);
    j["hidden_dropout_prob"] = hidden_dropout_prob;
    j["attention_probs_dropout_prob"] = attention_probs_dropout_prob;
    j["initializer_range"] = 0.02;
    if (num_labels() > 0) {
      // linear in the number of labels: ids are new keys by construction; a repeated label name
      // keeps its last id, as an assignment would (a hash index instead of a search per label)
      io::Json i2l = io::Json::object(), l2i = io::Json::object();
      std::unordered_map<std::string_view, int> last_id;
      last_id.reserve(id2label.size());
      for (int i = 0; i < num_labels(); ++i) last_id[id2label[i]] = i;
      for (int i = 0; i < num_labels(); ++i) {
        i2l.append_member(std::to_string(i), id2label[i]);
        auto it = last_id.find(id2label[i]);
        if (it->second >= 0) {  // first occurrence of the name: written once, with its last id
          l2i.append_member(id2label[i], it->second);
          it->second = -1;
        }
      }
      j["id2label"] = i2l;
      j["label2id"] = l2i;
      if (num_labels() == 1) j["problem_type"] = "regression";
    }
    io::Json ph = io::Json::object();
    for (auto& [l, heads] : pruned_heads) ph[std::to_string(l)] = heads;
    j["pruned_heads"] = ph;
    if (!layer_intermediate_sizes.empty()) j["dynabert_intermediate_sizes"] = layer_intermediate_sizes;
    return j;
  }

  /// BERT-base (uncased) dimensions.
  static BertConfig bert_base() { return BertConfig{}; }
  /// RoBERTa-base dimensions (vocabulary 50265, positions 514 from offset 2, one token type,
  /// LayerNorm eps 1e-5).
  static BertConfig roberta_base() {
    BertConfig c;
    c.model_type = ModelType::kRoberta;
    c.vocab_size = 50265;
    c.max_position_embeddings = 514;
    c.type_vocab_size = 1;
    c.pad_token_id = 1;
    c.layer_norm_eps = 1e-5;
    return c;
  }
};

}  // namespace dynabert
