#include "mq/models/causal_lm.hpp"
#include "mq/nn/quant_module.hpp"

namespace mq::models {

void register_hf_quant_modules() {
  for (const FamilyTraits& t : family_traits())
    nn::register_quant_attention(std::string(t.attention_class));
}

}  // namespace mq::models
