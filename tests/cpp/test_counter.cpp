// WrapCounter: first sample, plain deltas, one wrap, two wraps in a row, joule conversion.
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

TEST_MAIN()
