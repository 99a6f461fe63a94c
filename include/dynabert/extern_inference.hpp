// Explicit instantiation declarations of the float engine. When DYNABERT_EXTERN_TEMPLATES is
// defined (the CMake target dynabert::compiled defines it), the entry headers include this file
// and a program does not compile the engine itself: src/compiled.cpp (the library
// dynabert_compiled) holds one compiled copy. Header-only use needs neither.
#pragma once
#include "dynabert/inference.hpp"

namespace dynabert {
extern template class ElasticBert<float>;
extern template class Session<float>;
extern template class Workspace<float>;
extern template class BertWeights<float>;
extern template class detail::BertBlocks<float, DynamicDims>;
namespace layers {
extern template class Linear<float>;
extern template class Embeddings<float, 0>;
extern template class SelfAttention<float, 0>;
extern template class FeedForward<float>;
extern template class AddNorm<float, 0>;
extern template class EncoderLayer<float, DynamicDims>;
extern template class Pooler<float>;
extern template class Classifier<float>;
extern template class MlmHead<float>;
}  // namespace layers
namespace kernels {
extern template void gemm<false>(float*, long, const float*, long, int, const PackedView&, int, int, const Epilogue&, float*,
                                 const Threads&);
extern template void gemm<true>(float*, long, const float*, long, int, const PackedView&, int, int, const Epilogue&, float*,
                                const Threads&);
}  // namespace kernels
}  // namespace dynabert

