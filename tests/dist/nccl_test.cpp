// NcclComm and ProcessGroup on CUDA tensors. Skips (on every rank alike) without NCCL, GPUs or
// LibTorch's CUDA backend; runs on a GPU machine with `mpirun -np 2
// build/tests/dist/test_dist_nccl` (README.md).
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <gtest/gtest.h>

#include <vector>

#include "mq/dist/nccl_comm.hpp"
#include "mq/dist/parallel_state.hpp"

namespace mq::dist {
namespace {

bool usable(const MpiComm& world) {
  const bool mine = NcclComm::built() && NcclComm::device_count() > 0 && at::hasCUDA();
  return world.all(mine);
}

#define MQ_REQUIRE_GPUS(world)                                                               \
  if (!usable(world))                                                                        \
  GTEST_SKIP() << "needs NCCL, a CUDA device per rank and LibTorch CUDA (NcclComm::built()=" \
               << NcclComm::built() << ", devices=" << NcclComm::device_count() << ")"

TEST(NcclComm, BuiltOrExplainsWhyNot) {
  MpiComm world = MpiComm::world();
  if (NcclComm::built()) {
    EXPECT_GE(NcclComm::device_count(), 0);
  } else {
    EXPECT_EQ(NcclComm::device_count(), 0);
    EXPECT_THROW(NcclComm::bootstrap(world, 0), NcclError);
  }
  NcclComm null;
  EXPECT_FALSE(null.valid());
  null.abort();  // no-op on a null communicator
}

TEST(NcclComm, CollectivesOnDeviceTensors) {
  MpiComm world = MpiComm::world();
  MQ_REQUIRE_GPUS(world);
  const int r = world.rank(), w = world.size();
  const int dev = NcclComm::select_device(world);
  NcclComm nccl = NcclComm::bootstrap(world, dev);
  EXPECT_EQ(nccl.rank(), r);
  EXPECT_EQ(nccl.size(), w);
  const auto cuda = at::TensorOptions().device(at::kCUDA, dev);

  for (auto st : {at::kFloat, at::kBFloat16}) {
    at::Tensor s = (at::arange(33, at::kFloat) * 0.5f + 10.0f * r).to(cuda.dtype(st));
    at::Tensor mx = s.clone(), avg = s.clone();
    nccl.all_reduce(s, ReduceOp::kSum);
    nccl.all_reduce(mx, ReduceOp::kMax);
    nccl.all_reduce(avg, ReduceOp::kAvg);
    nccl.synchronize();
    const at::Tensor sum = at::arange(33, at::kFloat) * 0.5f * w + 10.0f * (w * (w - 1) / 2);
    EXPECT_TRUE(at::equal(s.cpu(), sum.to(st))) << st;  // exact partial sums
    EXPECT_TRUE(at::equal(mx.cpu(), (at::arange(33, at::kFloat) * 0.5f + 10.0f * (w - 1)).to(st)))
        << st;
    EXPECT_TRUE(at::allclose(avg.cpu().to(at::kFloat), sum / w, 1e-2, 1e-2)) << st;
  }
  at::Tensor b = at::full({5}, r, cuda.dtype(at::kLong));
  nccl.broadcast(b, w - 1);
  at::Tensor red = at::full({5}, r + 1, cuda.dtype(at::kInt));
  nccl.reduce(red, ReduceOp::kSum, 0);
  const at::Tensor g = nccl.all_gather(at::full({2}, r, cuda.dtype(at::kLong)));
  std::vector<int64_t> rows(w);
  for (int i = 0; i < w; ++i) rows[i] = i;
  const auto gv = nccl.all_gather_v(at::full({r, 2}, r, cuda.dtype(at::kFloat)), rows);
  const at::Tensor a2a = nccl.all_to_all((at::arange(w, at::kLong) + 10 * r).to(cuda));
  std::vector<at::Tensor> send;
  std::vector<int64_t> rrows(w, r);
  for (int j = 0; j < w; ++j) send.push_back(at::full({j}, r, cuda.dtype(at::kFloat)));
  const auto recv = nccl.all_to_all_v(send, rrows);
  nccl.synchronize();
  EXPECT_TRUE(at::equal(b.cpu(), at::full({5}, w - 1, at::kLong)));
  if (r == 0) {
    EXPECT_TRUE(at::equal(red.cpu(), at::full({5}, w * (w + 1) / 2, at::kInt)));
  }
  EXPECT_TRUE(at::equal(g.cpu(), at::arange(w, at::kLong).view({w, 1}).expand({w, 2})));
  for (int i = 0; i < w; ++i) EXPECT_TRUE(at::equal(gv[i].cpu(), at::full({i, 2}, i, at::kFloat)));
  EXPECT_TRUE(at::equal(a2a.cpu(), at::arange(w, at::kLong) * 10 + r));
  for (int i = 0; i < w; ++i) EXPECT_TRUE(at::equal(recv[i].cpu(), at::full({r}, i, at::kFloat)));

  NcclComm half = nccl.split(r % 2, r);
  EXPECT_EQ(half.size(), (w - r % 2 + 1) / 2);
}

TEST(NcclComm, ParallelStateSyncsDeviceAmaxWithAnEmptyRank) {
  MpiComm world = MpiComm::world();
  MQ_REQUIRE_GPUS(world);
  const int r = world.rank(), w = world.size();
  const ParallelGroups g = make_parallel_groups(world, {.tp = w}, {.nccl = true});
  ASSERT_TRUE(g.tp.has_nccl());
  std::optional<at::Tensor> amax;
  if (r != 0)
    amax = at::full({4}, 2.0f * r, at::TensorOptions().device(at::kCUDA, g.tp.nccl().device()));
  const auto res = sync_optional_amax_max(amax, g.dense(), {GroupKind::kData, GroupKind::kTensor});
  g.tp.nccl().synchronize();
  EXPECT_EQ(res.ranks_with_value, w - 1);
  if (w > 1) {
    ASSERT_TRUE(amax.has_value());
    EXPECT_TRUE(amax->is_cuda());
    EXPECT_TRUE(at::equal(amax->cpu(), at::full({4}, 2.0f * (w - 1))));
  }
  // Host tensors on the same group still go through MPI.
  at::Tensor host = at::full({1}, static_cast<float>(r));
  g.tp.all_reduce(host, ReduceOp::kMax);
  EXPECT_EQ(host.item<float>(), w - 1.0f);
}

}  // namespace
}  // namespace mq::dist
