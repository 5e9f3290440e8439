// RAPL register decoding against recorded raw values.
#include "check.hpp"
#include "rapl_msr_decode.hpp"

using namespace greenprobe::rapl;

TEST(intel_default_units) {
    // 0xA1003: power units 3 (1/8 W), energy status units 16, time units 10 (a common Intel value).
    CHECK(energy_status_units(0xA1003) == 16);
    CHECK_NEAR(joules_per_count(Vendor::Intel, Domain::Package, 0xA1003, 6, 0x9E), 15.2587890625e-6, 1e-18);
}

TEST(amd_ryzen_units) {
    // Ryzen 5800X reads 0xA1003 from 0xC0010299 as well: energy unit 16 -> 1.52588e-05 J.
    CHECK_NEAR(joules_per_count(Vendor::Amd, Domain::Core, 0xA1003, 0x19, 0x21), 1.52587890625e-05, 1e-18);
}

TEST(esu_14_gives_61_microjoules) {
    const uint64_t reg = (14ull << 8) | 0x3;
    CHECK_NEAR(joules_per_count(Vendor::Intel, Domain::Package, reg, 6, 0x55), 61.03515625e-6, 1e-18);
}

TEST(server_dram_uses_fixed_unit) {
    const uint64_t reg = (14ull << 8) | 0x3;  // ESU 14 in the register
    CHECK_NEAR(joules_per_count(Vendor::Intel, Domain::Dram, reg, 6, 0x55), 1.0 / 65536.0, 0.0);   // Skylake-X
    CHECK_NEAR(joules_per_count(Vendor::Intel, Domain::Dram, reg, 6, 0x9E), 1.0 / 16384.0, 0.0);  // client part
}

TEST(sapphire_rapids_psys_is_one_joule) {
    CHECK_NEAR(joules_per_count(Vendor::Intel, Domain::Psys, 0xA1003, 6, 0x8F), 1.0, 0.0);
    CHECK_NEAR(joules_per_count(Vendor::Intel, Domain::Psys, 0xA1003, 6, 0x9E), 1.0 / 65536.0, 0.0);
}

TEST(counter_is_the_low_32_bits) {
    CHECK(energy_counter(0xDEADBEEF12345678ull) == 0x12345678ull);
}

TEST(register_addresses_match_the_sdm) {
    CHECK(unit_register(Vendor::Intel) == 0x606);
    CHECK(unit_register(Vendor::Amd) == 0xC0010299u);
    auto intel = domain_registers(Vendor::Intel);
    CHECK(intel.size() == 5);
    CHECK(intel[0].msr == 0x611 && intel[1].msr == 0x639 && intel[2].msr == 0x641 && intel[3].msr == 0x619 &&
          intel[4].msr == 0x64D);
    auto amd = domain_registers(Vendor::Amd);
    CHECK(amd.size() == 2 && amd[0].msr == 0xC001029Bu && amd[1].msr == 0xC001029Au && amd[1].per_core);
}

TEST_MAIN()
