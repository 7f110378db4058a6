#pragma once
/// The interface every sparse MoE block implements (Mixtral's `block_sparse_moe`, Qwen3-MoE's
/// `mlp`), so calibration can (a) sync local expert amaxes as ModelOpt's
/// `layer_sync_moe_local_experts_amax` does (reference algorithms §1.2 step 6) and (b) report
/// per-expert token counts and starved experts.
///
/// Children of an implementation, named as in the HF checkpoint so ModelOpt patterns match
/// verbatim:
///   gate                  nn.Linear router (Mixtral and Qwen3-MoE both call it `gate`)
///   experts               nn.ModuleList, expert e = experts.<e> holding its linears (w1/w2/w3 or
///                         gate_proj/up_proj/down_proj)
#include <cstdint>
#include <vector>

#include "mq/nn/module.hpp"

namespace mq::nn {

class SparseMoeBlock : public Module {
 public:
  /// The `experts` ModuleList.
  virtual ModuleList& experts() = 0;
  /// Tokens routed to each expert (top-k assignments counted once per token and expert) since the
  /// last reset_token_counts(); size == number of experts.
  const std::vector<int64_t>& expert_token_counts() const { return token_counts_; }
  void reset_token_counts() { token_counts_.assign(token_counts_.size(), 0); }

 protected:
  /// Implementations size this once (num_experts) and add to it in forward.
  std::vector<int64_t> token_counts_;
};

}  // namespace mq::nn
