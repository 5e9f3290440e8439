// WrapCounter: first sample, plain deltas, one wrap, two wraps in a row, joule conversion; and
// judge_step, the physics that tells a wrap from a glitch: a backward step, a jump above the power
// ceiling, a gap that could hide whole wraps.
#include "check.hpp"
#include "greenprobe/counter.hpp"

using greenprobe::WrapCounter;

TEST(first_sample_is_zero) {
    WrapCounter c(0xFFFFFFFFull, 1.0);
    CHECK(c.update(123456) == 0.0);
    CHECK(c.total_raw() == 0);
}

TEST(plain_deltas_accumulate) {
    WrapCounter c(0xFFFFFFFFull, 0.5);
    c.update(100);
    CHECK(c.update(150) == 25.0);
    CHECK(c.update(150) == 25.0);
    CHECK(c.update(300) == 100.0);
    CHECK(c.wraps() == 0);
}

TEST(one_wrap_of_a_32_bit_register) {
    WrapCounter c(0xFFFFFFFFull, 1.0);
    c.update(0xFFFFFFF0ull);
    // 0xFFFFFFF0 -> 0xFFFFFFFF is 15 steps, -> 0 one more, -> 5 five more: 21
    CHECK(c.update(5) == 21.0);
    CHECK(c.wraps() == 1);
}

TEST(double_wrap_across_two_reads) {
    WrapCounter c(999, 1e-6);  // a powercap zone with max_energy_range_uj = 999
    c.update(990);
    c.update(10);   // +20 (990..999 is 9, then 0 is 1 more, then 10)
    c.update(995);  // +985
    c.update(3);    // +8
    CHECK(c.total_raw() == 20 + 985 + 8);
    CHECK(c.wraps() == 2);
    CHECK_NEAR(c.joules(), 1013e-6, 1e-15);
}

TEST(rapl_units_to_joules) {
    WrapCounter c(0xFFFFFFFFull, 1.0 / 65536.0);  // ESU 16
    c.update(0);
    CHECK_NEAR(c.update(65536), 1.0, 0.0);
}

TEST(a_backward_glitch_reads_as_a_wrap_of_nearly_the_whole_range) {
    // From two raw values alone a glitch and a wrap look the same: the counter adds max - D + 1.
    WrapCounter c(999999, 1e-6);  // a 1 J powercap range
    c.update(500000);
    const double j = c.update(499000);  // 1000 µJ backwards
    CHECK_NEAR(j, (999999 - 500000 + 499000 + 1) * 1e-6, 1e-12);
    CHECK(c.wraps() == 1);
    // ... which judge_step, with the time and the ceiling, rejects: 0.999 J in 1 ms is 999 W on a
    // 100 W ceiling (a 1-ms gap at 100 W cannot hide a whole 1-J range: the wrap count is not in doubt)
    CHECK(greenprobe::judge_step(j, 1e-3, 1e-3, 100.0, 1.0, 1e-6) == greenprobe::StepVerdict::AboveCeiling);
}

using greenprobe::judge_step;
using greenprobe::StepVerdict;

TEST(judge_step_accepts_steps_the_device_can_draw) {
    CHECK(judge_step(0.0, 1e-3, 1e-3, 1000.0, 262144.0, 6.1e-5) == StepVerdict::Ok);
    CHECK(judge_step(0.5, 1e-3, 1e-3, 1000.0, 262144.0, 6.1e-5) == StepVerdict::Ok);  // 500 W
    // a 100-ms NVML step seen in a 1-ms poll gap: judged on its accrual time, not the gap
    CHECK(judge_step(40.0, 0.101, 1e-3, 2000.0, 0.0, 1e-3) == StepVerdict::Ok);
    // one resolution step over a tiny time is quantisation, not power
    CHECK(judge_step(6.1e-5, 1e-9, 1e-9, 1000.0, 262144.0, 6.1e-5) == StepVerdict::Ok);
    // a wrap of a 32-bit RAPL register: small step, short gap
    WrapCounter c(0xFFFFFFFFull, 1.0 / 16384.0);
    c.update(0xFFFFFF00ull);
    CHECK(judge_step(c.update(0x100), 1e-3, 1e-3, 1000.0, 4294967296.0 / 16384.0, 1.0 / 16384.0) == StepVerdict::Ok);
}

TEST(judge_step_rejects_a_backward_step_whatever_the_ceiling) {
    CHECK(judge_step(-1e-6, 1.0, 1.0, 0.0, 0.0, 1e-6) == StepVerdict::Backwards);
    CHECK(judge_step(-5.0, 1.0, 1.0, 1000.0, 100.0, 1e-6) == StepVerdict::Backwards);
}

TEST(judge_step_rejects_a_forward_jump_above_the_ceiling) {
    CHECK(judge_step(1.1, 1e-3, 1e-3, 1000.0, 262144.0, 1e-6) == StepVerdict::AboveCeiling);  // 1100 W
    CHECK(judge_step(1.1, 1e-3, 1e-3, 0.0, 0.0, 1e-6) == StepVerdict::Ok);  // no ceiling known: kept
}

TEST(judge_step_rejects_a_gap_that_could_hide_whole_wraps) {
    // 262 s at 1000 W can hold a whole 262144-J range: how many wraps happened is unknown
    CHECK(judge_step(10.0, 263.0, 262.2, 1000.0, 262144.0, 1e-6) == StepVerdict::WrapsAmbiguous);
    CHECK(judge_step(0.0, 263.0, 262.2, 1000.0, 262144.0, 1e-6) == StepVerdict::WrapsAmbiguous);
    CHECK(judge_step(10.0, 263.0, 262.0, 1000.0, 262144.0, 1e-6) == StepVerdict::Ok);   // just short of it
    CHECK(judge_step(10.0, 1e4, 1e4, 1000.0, 0.0, 1e-6) == StepVerdict::Ok);            // never wraps
}

TEST_MAIN()
