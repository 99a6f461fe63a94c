// dynabert_compiled: one compiled copy of the float engine (explicit instantiation definitions
// matching include/dynabert/extern_*.hpp). Programs that link dynabert::compiled get
// DYNABERT_EXTERN_TEMPLATES and skip compiling these templates themselves; the library must be
// built with the same instruction-set flags as the programs (the project builds it with its own).
#include <dynabert/dynabert.hpp>

namespace dynabert {
template class ElasticBert<float>;
template class Session<float>;
template class Workspace<float>;
template class BertWeights<float>;
template class detail::BertBlocks<float, DynamicDims>;
namespace layers {
template class Linear<float>;
template class Embeddings<float, 0>;
template class SelfAttention<float, 0>;
template class FeedForward<float>;
template class AddNorm<float, 0>;
template class EncoderLayer<float, DynamicDims>;
template class Pooler<float>;
template class Classifier<float>;
template class MlmHead<float>;
}  // namespace layers
namespace kernels {
template void gemm<false>(float*, long, const float*, long, int, const PackedView&, int, int, const Epilogue&, float*,
                          const Threads&);
template void gemm<true>(float*, long, const float*, long, int, const PackedView&, int, int, const Epilogue&, float*,
                         const Threads&);
}  // namespace kernels
namespace train {
template class TrainableBert<float, DynamicDims>;
template class Trainer<float>;
template class AdamW<float>;
}  // namespace train
namespace importance {
template class Scorer<float>;
}  // namespace importance
}  // namespace dynabert
