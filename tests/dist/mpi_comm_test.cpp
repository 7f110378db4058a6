// Every MpiComm collective on 1, 2 and 4 ranks: inputs are functions of (rank, index), expected
// values are closed forms, compared bit for bit.
#include "mq/dist/mpi_comm.hpp"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

namespace mq::dist {
namespace {

struct Ctx {
  MpiComm world = MpiComm::world();
  int r = world.rank();
  int w = world.size();
};

// Element counts around the group size (fewer elements than ranks, not a multiple of it, empty).
const int64_t kSizes[] = {0, 1, 3, 33, 1000};

template <typename T>
bool same_bits(T a, T b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

TEST(MpiComm, RankSizeHostWorldRanks) {
  Ctx c;
  int wr = -1, ws = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &wr);
  MPI_Comm_size(MPI_COMM_WORLD, &ws);
  EXPECT_EQ(c.r, wr);
  EXPECT_EQ(c.w, ws);
  EXPECT_TRUE(c.world.valid());
  EXPECT_FALSE(MpiComm::host().empty());
  std::vector<int> all(c.w);
  for (int i = 0; i < c.w; ++i) all[i] = i;
  EXPECT_EQ(c.world.world_ranks(), all);
  c.world.barrier();
  MpiComm null;
  EXPECT_EQ(null.rank(), -1);
  EXPECT_EQ(null.size(), -1);
  EXPECT_THROW(null.barrier(), Error);
}

TEST(MpiComm, MoveOnlyRaii) {
  Ctx c;
  MpiComm a = c.world.split(0, c.r);
  const MPI_Comm h = a.native();
  MpiComm b = std::move(a);
  EXPECT_FALSE(a.valid());  // NOLINT(bugprone-use-after-move): moved-from is the null communicator
  EXPECT_EQ(b.native(), h);
  b = c.world.split(0, c.r);
  EXPECT_TRUE(b.valid());
  EXPECT_EQ(b.size(), c.w);
}

TEST(MpiComm, SplitColorKey) {
  Ctx c;
  // Two colours by parity; the key reverses the order.
  MpiComm s = c.world.split(c.r % 2, -c.r);
  const int members = (c.w - c.r % 2 + 1) / 2;
  EXPECT_EQ(s.size(), members);
  std::vector<int> expect;
  for (int i = c.w - 1; i >= 0; --i)
    if (i % 2 == c.r % 2) expect.push_back(i);
  EXPECT_EQ(s.world_ranks(), expect);
  EXPECT_EQ(expect.at(s.rank()), c.r);
  // Undefined colour: the null communicator, on this rank only.
  MpiComm only0 = c.world.split(c.r == 0 ? 0 : -1, 0);
  EXPECT_EQ(only0.valid(), c.r == 0);
  MpiComm node = c.world.split_shared();
  EXPECT_EQ(node.size(), c.w);  // one host here
}

TEST(MpiComm, SmallExchanges) {
  Ctx c;
  const auto sq = c.world.all_gather_int64(int64_t{c.r} * c.r - 5);
  ASSERT_EQ(static_cast<int>(sq.size()), c.w);
  for (int i = 0; i < c.w; ++i) EXPECT_EQ(sq[i], int64_t{i} * i - 5);
  const auto odd = c.world.all_gather_bool(c.r % 2 == 1);
  for (int i = 0; i < c.w; ++i) EXPECT_EQ(odd[i], i % 2 == 1);
  EXPECT_EQ(c.world.all_reduce_int64(c.r + 1, ReduceOp::kSum), int64_t{c.w} * (c.w + 1) / 2);
  EXPECT_EQ(c.world.all_reduce_int64(c.r, ReduceOp::kMax), c.w - 1);
  EXPECT_EQ(c.world.all_reduce_int64(c.r, ReduceOp::kMin), 0);
  EXPECT_TRUE(c.world.any(c.r == c.w - 1));
  EXPECT_FALSE(c.world.any(false));
  EXPECT_EQ(c.world.all(c.r != 0), false);
  EXPECT_TRUE(c.world.all(true));
  EXPECT_THROW(c.world.all_reduce_int64(1, ReduceOp::kAvg), Error);
}

TEST(MpiComm, AllReduceFloat32SumAvgMaxMinClosedForm) {
  Ctx c;
  for (int64_t n : kSizes) {
    auto make = [&] {
      at::Tensor t = at::empty({n}, at::kFloat);
      for (int64_t i = 0; i < n; ++i) t[i] = 10.0f * c.r + 0.5f * static_cast<float>(i) - 3.0f;
      return t;
    };
    at::Tensor s = make(), a = make(), mx = make(), mn = make();
    c.world.all_reduce(s, ReduceOp::kSum);
    c.world.all_reduce(a, ReduceOp::kAvg);
    c.world.all_reduce(mx, ReduceOp::kMax);
    c.world.all_reduce(mn, ReduceOp::kMin);
    for (int64_t i = 0; i < n; ++i) {
      // Every partial sum is a small multiple of 0.5: exact in fp32.
      const float sum = 10.0f * static_cast<float>(c.w * (c.w - 1) / 2) + c.w * (0.5f * i - 3.0f);
      EXPECT_TRUE(same_bits(s[i].item<float>(), sum)) << "n=" << n << " i=" << i;
      EXPECT_TRUE(same_bits(a[i].item<float>(), sum / static_cast<float>(c.w)));
      EXPECT_EQ(mx[i].item<float>(), 10.0f * (c.w - 1) + 0.5f * i - 3.0f);
      EXPECT_EQ(mn[i].item<float>(), 0.5f * i - 3.0f);
    }
  }
}

TEST(MpiComm, AllReduceSumIsALeftFoldInRankOrder) {
  Ctx c;
  // x = [1e8, 1, -1e8, 1, ...]: the left fold ((1e8 + 1) - 1e8) + 1 gives 1 in fp32, a pairwise
  // tree gives 0 and the exact sum is 2; the fold below reproduces the rank order on any size.
  auto x = [](int r) { return r == 0 ? 1e8f : (r == 2 ? -1e8f : 1.0f); };
  at::Tensor t = at::full({5}, x(c.r), at::kFloat);
  c.world.all_reduce(t, ReduceOp::kSum);
  float fold = x(0);
  for (int i = 1; i < c.w; ++i) fold += x(i);
  for (int64_t i = 0; i < 5; ++i) EXPECT_TRUE(same_bits(t[i].item<float>(), fold));
  if (c.w == 4) {
    EXPECT_EQ(t[0].item<float>(), 1.0f);
  }
  // Same bits on every rank.
  const auto bits = c.world.all_gather(t.view(at::kInt));
  for (int i = 0; i < c.w; ++i) EXPECT_TRUE(at::equal(bits[i], bits[0]));
}

TEST(MpiComm, AllReduceBf16Fp16AccumulateInFp32RoundOnce) {
  Ctx c;
  for (auto st : {at::kBFloat16, at::kHalf}) {
    for (int64_t n : kSizes) {
      at::Tensor t = at::empty({n}, at::kFloat);
      for (int64_t i = 0; i < n; ++i) t[i] = 1.0f + c.r / 128.0f + (i % 7) / 64.0f;
      at::Tensor x = t.to(st);  // exact: few mantissa bits
      at::Tensor s = x.clone(), a = x.clone(), mx = x.clone();
      c.world.all_reduce(s, ReduceOp::kSum);
      c.world.all_reduce(a, ReduceOp::kAvg);
      c.world.all_reduce(mx, ReduceOp::kMax);
      for (int64_t i = 0; i < n; ++i) {
        float sum = 0.0f;
        for (int k = 0; k < c.w; ++k) sum += 1.0f + k / 128.0f + (i % 7) / 64.0f;  // exact in fp32
        const at::Tensor want_s = at::full({1}, sum, at::kFloat).to(st);
        const at::Tensor want_a = at::full({1}, sum / static_cast<float>(c.w), at::kFloat).to(st);
        const at::Tensor want_m =
            at::full({1}, 1.0f + (c.w - 1) / 128.0f + (i % 7) / 64.0f, at::kFloat).to(st);
        EXPECT_TRUE(at::equal(s.narrow(0, i, 1).view(at::kShort), want_s.view(at::kShort)))
            << st << " i=" << i;
        EXPECT_TRUE(at::equal(a.narrow(0, i, 1).view(at::kShort), want_a.view(at::kShort)))
            << st << " i=" << i;
        EXPECT_TRUE(at::equal(mx.narrow(0, i, 1).view(at::kShort), want_m.view(at::kShort)))
            << st << " i=" << i;
      }
    }
  }
}

TEST(MpiComm, AllReduceMaxPropagatesNaN) {
  Ctx c;
  at::Tensor t = at::full({3}, static_cast<float>(c.r), at::kFloat);
  if (c.r == c.w - 1) t[1] = std::numeric_limits<float>::quiet_NaN();
  c.world.all_reduce(t, ReduceOp::kMax);
  EXPECT_EQ(t[0].item<float>(), c.w - 1.0f);
  EXPECT_TRUE(std::isnan(t[1].item<float>()));
}

TEST(MpiComm, AllReduceIntegersAndBool) {
  Ctx c;
  for (auto st : {at::kLong, at::kInt, at::kByte}) {
    at::Tensor base = at::arange(33, at::kLong).remainder(5).add(c.r).to(st);
    at::Tensor s = base.clone(), mx = base.clone(), mn = base.clone();
    c.world.all_reduce(s, ReduceOp::kSum);
    c.world.all_reduce(mx, ReduceOp::kMax);
    c.world.all_reduce(mn, ReduceOp::kMin);
    const at::Tensor idx = at::arange(33, at::kLong).remainder(5);
    EXPECT_TRUE(at::equal(s.to(at::kLong), idx * c.w + c.w * (c.w - 1) / 2)) << st;
    EXPECT_TRUE(at::equal(mx.to(at::kLong), idx + (c.w - 1))) << st;
    EXPECT_TRUE(at::equal(mn.to(at::kLong), idx)) << st;
    at::Tensor avg = base.clone();
    EXPECT_THROW(c.world.all_reduce(avg, ReduceOp::kAvg), Error) << st;
  }
  at::Tensor flag = at::full({4}, c.r == c.w - 1, at::kBool);
  at::Tensor any = flag.clone(), all = flag.clone();
  c.world.all_reduce(any, ReduceOp::kMax);
  c.world.all_reduce(all, ReduceOp::kMin);
  EXPECT_TRUE(any.all().item<bool>());
  EXPECT_EQ(all.all().item<bool>(), c.w == 1);
  EXPECT_THROW(c.world.all_reduce(flag, ReduceOp::kSum), Error);
}

TEST(MpiComm, BroadcastFromEveryRoot) {
  Ctx c;
  for (int root = 0; root < c.w; ++root) {
    for (auto st : {at::kFloat, at::kBFloat16, at::kLong, at::kByte}) {
      at::Tensor t = (at::arange(12, at::kFloat).view({3, 4}) + 100 * c.r).to(st);
      c.world.broadcast(t, root);
      EXPECT_TRUE(at::equal(t, (at::arange(12, at::kFloat).view({3, 4}) + 100 * root).to(st)))
          << st << " root " << root;
    }
  }
}

TEST(MpiComm, ReduceToOwnerMatchesAllReduceBits) {
  Ctx c;
  const int root = c.w - 1;
  for (auto st : {at::kFloat, at::kBFloat16, at::kLong}) {
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax}) {
      at::Tensor x = (at::arange(33, at::kFloat) * 0.37f + 1.3f * c.r).to(st);
      at::Tensor red = x.clone(), ar = x.clone();
      c.world.reduce(red, op, root);
      c.world.all_reduce(ar, op);
      if (c.r == root) {
        EXPECT_TRUE(at::equal(red, ar)) << st << " " << reduce_op_name(op);
      } else {
        EXPECT_TRUE(at::equal(red, x)) << "non-owner changed";
      }
    }
  }
}

TEST(MpiComm, AllGatherSameShape) {
  Ctx c;
  for (auto st : {at::kFloat, at::kHalf, at::kInt, at::kBool}) {
    at::Tensor t = (at::arange(6, at::kLong).view({2, 3}) * (c.r + 1)).remainder(7).to(st);
    at::Tensor out = c.world.all_gather(t);
    ASSERT_EQ(out.sizes(), (at::IntArrayRef{c.w, 2, 3}));
    for (int i = 0; i < c.w; ++i)
      EXPECT_TRUE(
          at::equal(out[i], (at::arange(6, at::kLong).view({2, 3}) * (i + 1)).remainder(7).to(st)))
          << st;
  }
}

TEST(MpiComm, AllGatherVariableRowsIncludingEmpty) {
  Ctx c;
  // Rank r contributes r rows (rank 0 none): row k of rank r is r*100 + k*10 + col.
  auto rows_of = [](int r, int64_t nrows) {
    return at::arange(nrows * 3, at::kFloat).view({nrows, 3}).remainder(3) +
           (at::arange(nrows, at::kFloat) * 10).view({nrows, 1}) + 100.0f * r;
  };
  const auto parts = c.world.all_gather_v(rows_of(c.r, c.r));
  ASSERT_EQ(static_cast<int>(parts.size()), c.w);
  for (int i = 0; i < c.w; ++i) {
    ASSERT_EQ(parts[i].sizes(), (at::IntArrayRef{i, 3}));
    EXPECT_TRUE(at::equal(parts[i], rows_of(i, i)));
  }
}

TEST(MpiComm, AllToAll) {
  Ctx c;
  // Row j*2+k of rank r's input is r*1000 + j*10 + k (goes to rank j); output row i*2+k came from
  // rank i.
  at::Tensor in = at::empty({c.w * 2, 3}, at::kLong);
  for (int j = 0; j < c.w; ++j)
    for (int k = 0; k < 2; ++k) in[j * 2 + k].fill_(c.r * 1000 + j * 10 + k);
  const at::Tensor out = c.world.all_to_all(in);
  ASSERT_EQ(out.sizes(), in.sizes());
  for (int i = 0; i < c.w; ++i)
    for (int k = 0; k < 2; ++k)
      EXPECT_TRUE((out[i * 2 + k] == i * 1000 + c.r * 10 + k).all().item<bool>());
}

TEST(MpiComm, AllToAllVariableRows) {
  Ctx c;
  // Rank r sends (r + j) % 3 rows of value r*100 + j to rank j.
  std::vector<at::Tensor> send;
  for (int j = 0; j < c.w; ++j)
    send.push_back(at::full({(c.r + j) % 3, 2}, c.r * 100 + j, at::kBFloat16));
  const auto recv = c.world.all_to_all_v(send);
  ASSERT_EQ(static_cast<int>(recv.size()), c.w);
  for (int i = 0; i < c.w; ++i) {
    ASSERT_EQ(recv[i].sizes(), (at::IntArrayRef{(i + c.r) % 3, 2}));
    EXPECT_TRUE(at::equal(recv[i], at::full({(i + c.r) % 3, 2}, i * 100 + c.r, at::kBFloat16)));
  }
}

// A bad argument on one rank raises on every rank (no hang): shapes that differ between ranks, and
// a local precondition failure (non-contiguous) on rank 0 only.
TEST(MpiComm, MismatchedArgumentsThrowOnEveryRank) {
  Ctx c;
  if (c.w < 2) GTEST_SKIP() << "needs 2 ranks";
  at::Tensor t = at::zeros({c.r == 1 ? 3 : 2}, at::kFloat);
  try {
    c.world.all_reduce(t, ReduceOp::kSum);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("ranks disagree"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("rank 1 passed Float on cpu [3] op sum"),
              std::string::npos)
        << e.what();
  }
  at::Tensor u = c.r == 0 ? at::zeros({4, 4}, at::kFloat).t() : at::zeros({4, 4}, at::kFloat);
  try {
    c.world.broadcast(u, 0);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    if (c.r == 0) {
      EXPECT_NE(msg.find("must be contiguous"), std::string::npos) << msg;
    } else {
      EXPECT_NE(msg.find("rank 0 of the group passed invalid arguments"), std::string::npos) << msg;
    }
  }
  // Different roots.
  at::Tensor v = at::zeros({2}, at::kFloat);
  EXPECT_THROW(c.world.broadcast(v, c.r == 0 ? 0 : 1), Error);
  // The communicator still works afterwards.
  EXPECT_EQ(c.world.all_reduce_int64(1, ReduceOp::kSum), c.w);
}

TEST(MpiComm, MpiCodesBecomeTypedErrors) {
  Ctx c;
  // Our communicators return codes instead of aborting inside MPI ...
  MPI_Errhandler eh = MPI_ERRHANDLER_NULL;
  ASSERT_EQ(MPI_Comm_get_errhandler(c.world.native(), &eh), MPI_SUCCESS);
  EXPECT_EQ(eh, MPI_ERRORS_RETURN);
  MPI_Errhandler_free(&eh);
  // ... and MQ_MPI_CHECK turns a code into an MpiError naming the call and MPI's text.
  try {
    MQ_MPI_CHECK(MPI_ERR_ROOT);
    ADD_FAILURE() << "no error";
  } catch (const MpiError& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.rfind("MPI error " + std::to_string(MPI_ERR_ROOT) + " (", 0), 0u) << msg;
    EXPECT_NE(msg.find("in MPI_ERR_ROOT at "), std::string::npos) << msg;
    EXPECT_NE(msg.find("mpi_comm_test.cpp:"), std::string::npos) << msg;
  }
  MQ_MPI_CHECK(MPI_SUCCESS);
}

TEST(MpiComm, RejectsDeviceAndUnsupportedTensors) {
  Ctx c;
  at::Tensor cf = at::zeros({2}, at::kComplexFloat);
  EXPECT_THROW(c.world.all_reduce(cf, ReduceOp::kSum), Error);
  at::Tensor undef;
  EXPECT_THROW(c.world.all_reduce(undef, ReduceOp::kMax), Error);
}

// Point to point: every rank sends every other rank tensors whose dtype, shape and values are
// functions of (source, destination), including float8, 0-d, empty and non-contiguous ones, and a
// string; received in send order, compared bit for bit.
TEST(MpiComm, SendRecvTensorsWithMetadata) {
  Ctx c;
  auto make = [](int src, int dst, int k) -> at::Tensor {
    const double base = 100.0 * src + 10.0 * dst;
    switch (k) {
      case 0:  // bf16 (3, 5), odd sizes
        return (at::arange(15, at::kFloat).reshape({3, 5}) * 0.37 + base).to(at::kBFloat16);
      case 1:  // float8 e4m3 (2, 7)
        return (at::arange(14, at::kFloat).reshape({2, 7}) * 0.5 - 3.0 + src)
            .to(at::kFloat8_e4m3fn);
      case 2:  // 0-d fp32
        return at::scalar_tensor(base + 0.25, at::kFloat);
      case 3:  // empty (0, 4) uint8
        return at::empty({0, 4}, at::kByte);
      case 4:  // non-contiguous int64 (4, 3) transposed view
        return (at::arange(12, at::kLong).reshape({3, 4}) + src * 1000 + dst).t();
      default:  // 1-D int8, length depends on the pair
        return (at::arange(1 + src + 2 * dst, at::kLong) - 5).to(at::kChar);
    }
  };
  constexpr int kKinds = 6;
  // Ordering that cannot deadlock with blocking sends: for each ordered pair in rank order, the
  // source sends everything, then the destination receives it.
  for (int src = 0; src < c.w; ++src)
    for (int dst = 0; dst < c.w; ++dst) {
      if (src == dst) continue;
      if (c.r == src) {
        for (int k = 0; k < kKinds; ++k) c.world.send(make(src, dst, k), dst, 7);
        c.world.send_string(std::string("from ") + std::to_string(src) + std::string(1, '\0') + "x",
                            dst, 8);
      }
      if (c.r == dst) {
        for (int k = 0; k < kKinds; ++k) {
          const at::Tensor want = make(src, dst, k).contiguous();
          const at::Tensor got = c.world.recv(src, 7);
          ASSERT_EQ(got.scalar_type(), want.scalar_type()) << k;
          ASSERT_EQ(got.sizes(), want.sizes()) << k;
          ASSERT_TRUE(got.is_contiguous());
          EXPECT_EQ(0, std::memcmp(got.data_ptr(), want.data_ptr(), want.nbytes())) << k;
        }
        EXPECT_EQ(c.world.recv_string(src, 8),
                  std::string("from ") + std::to_string(src) + std::string(1, '\0') + "x");
      }
      c.world.barrier();
    }
  EXPECT_THROW(c.world.send(at::zeros({1}), c.w, 0), Error);
  EXPECT_THROW(c.world.recv(-1, 0), Error);
  EXPECT_THROW(c.world.send(at::Tensor(), 0, 0), Error);
  if (c.w >= 2) {
    // A string where a tensor is expected (and the reverse) is an error, not garbage.
    if (c.r == 0) {
      c.world.send_string("abc", 1, 9);
      c.world.send(at::ones({1000}), 1, 9);
      c.world.send_string("after", 1, 9);
    }
    if (c.r == 1) {
      try {
        c.world.recv(0, 9);
        ADD_FAILURE() << "recv accepted a string message";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("is not a tensor"), std::string::npos) << e.what();
      }
      try {
        c.world.recv_string(0, 9);
        ADD_FAILURE() << "recv_string accepted a tensor message";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("is not a string"), std::string::npos) << e.what();
      }
      // Both wrong messages were consumed whole: the next one arrives intact.
      EXPECT_EQ(c.world.recv_string(0, 9), "after");
    }
    c.world.barrier();
  }
}

}  // namespace
}  // namespace mq::dist
