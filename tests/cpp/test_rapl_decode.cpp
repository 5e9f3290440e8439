// RAPL register decoding against recorded raw values.
#include "check.hpp"
#include "rapl_msr_decode.hpp"
#include "text.hpp"

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

TEST(containment_one_rule_for_the_three_rapl_sensors) {
    // two packages with core and dram, psys read: packages and DRAM in psys, cores in their package
    const std::vector<std::string> names{"package-0", "core-0", "dram-0", "package-1", "core-1", "psys"};
    const std::vector<Domain> kind{Domain::Package, Domain::Core, Domain::Dram, Domain::Package, Domain::Core, Domain::Psys};
    const std::vector<std::string> pkg{"package-0", "package-0", "package-0", "package-1", "package-1", ""};
    CHECK(parents(names, kind, pkg) ==
          (std::vector<std::string>{"psys", "package-0", "psys", "psys", "package-1", ""}));
    // no psys, and core-1's package not read: everything at the top but core-0
    const std::vector<std::string> n2{"package-0", "core-0", "dram-0", "core-1"};
    const std::vector<Domain> k2{Domain::Package, Domain::Core, Domain::Dram, Domain::Uncore};
    CHECK(parents(n2, k2, {"package-0", "package-0", "package-0", "package-1"}) ==
          (std::vector<std::string>{"", "package-0", "", ""}));
}

TEST(one_integer_parser) {
    using greenprobe::text::parse_integer;
    using greenprobe::text::parse_unsigned;
    long long i = 7;
    uint64_t u = 7;
    CHECK(parse_integer("123\n", i) && i == 123);
    CHECK(parse_integer(" -5 ", i) && i == -5);
    CHECK(parse_integer("010", i) && i == 10);  // never octal
    CHECK(!parse_integer("0x10", i) && !parse_integer("", i) && !parse_integer("-", i) && !parse_integer("1 2", i));
    CHECK(!parse_integer("99999999999999999999", i) && i == 10);  // overflow: refused, untouched
    CHECK(parse_unsigned("18446744073709551615\n", u) && u == 18446744073709551615ull);
    CHECK(!parse_unsigned("-1", u) && !parse_unsigned("18446744073709551616", u) && !parse_unsigned("abc", u));
    int n = 7;  // into an int: what does not fit is refused, not wrapped
    CHECK(parse_integer("-2147483648\n", n) && n == -2147483648);
    CHECK(!parse_integer("2147483648", n) && !parse_integer("4294967298", n) && n == -2147483648);
    using greenprobe::text::parse_hex;  // only where the format is hex
    CHECK(parse_hex("000001ffffffffff\n", u) && u == 0x1ffffffffffull);
    CHECK(parse_hex("0x0A", u) && u == 10 && parse_hex("ffffffffffffffff", u) && u == ~0ull);
    CHECK(!parse_hex("0x", u) && !parse_hex("0x0x5", u) && !parse_hex("-1", u) && !parse_hex("1g", u) &&
          !parse_hex("10000000000000000", u) && !parse_hex("", u) && u == ~0ull);
}

TEST(containment_by_name_is_the_same_rule) {
    // The names the sensors give, placed back: the rule Python's topology asks the core for.
    CHECK(!place_by_name("psys-0") && !place_by_name("core-") && !place_by_name("core-1x") && !place_by_name("gpu0"));
    CHECK(place_by_name("core")->kind == Domain::Core && place_by_name("core")->package == "package-0");
    CHECK(place_by_name("uncore-1")->kind == Domain::Uncore && place_by_name("uncore-1")->package == "package-1");
    CHECK(place_by_name("dram-1")->kind == Domain::Dram && place_by_name("psys")->kind == Domain::Psys);
    const std::vector<std::string> two{"package-0", "core-0", "uncore-0", "dram-0", "package-1", "core-1", "dram-1", "psys"};
    CHECK(parent_by_name("core-1", two) == "package-1" && parent_by_name("uncore-0", two) == "package-0");
    CHECK(parent_by_name("dram-1", two) == "psys" && parent_by_name("package-0", two) == "psys");
    CHECK(parent_by_name("psys", two) == "" && parent_by_name("other", two) == "");
    const std::vector<std::string> one{"package-0", "core", "dram"};
    CHECK(parent_by_name("core", one) == "package-0" && parent_by_name("dram", one) == "" &&
          parent_by_name("package-0", one) == "");
    // a domain not among them (a parent without samples) has its own parent among them
    CHECK(parent_by_name("package-0", {"core-0", "psys"}) == "psys" && parent_by_name("core-0", {"psys"}) == "");
    // parents() over the same names gives the same answers
    std::vector<Domain> kind;
    std::vector<std::string> pkg;
    for (const auto& n : two) {
        kind.push_back(place_by_name(n)->kind);
        pkg.push_back(place_by_name(n)->package);
    }
    const auto stated = parents(two, kind, pkg);
    for (std::size_t c = 0; c < two.size(); ++c) CHECK(parent_by_name(two[c], two) == stated[c]);
}

TEST_MAIN()
