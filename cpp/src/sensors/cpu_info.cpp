#include "cpu_info.hpp"

#include <cstdlib>
#include <sstream>

#include "fileio.hpp"
#include "text.hpp"

namespace greenprobe {

using text::trim;

CpuIdentity read_cpu_identity(const std::string& proc_root) {
    CpuIdentity id;
    auto text = read_small_file(proc_root + "/cpuinfo");
    if (!text) return id;
    std::istringstream in(*text);
    std::string line;
    while (std::getline(in, line)) {
        const auto colon = line.find(':');
        if (colon == std::string::npos) continue;
        const std::string key = trim(line.substr(0, colon));
        const std::string value = trim(line.substr(colon + 1));
        if (key == "processor") ++id.logical_cpus;
        if (id.logical_cpus > 1) continue;  // identity from the first CPU only
        if (key == "vendor_id") id.vendor_id = value;
        else if (key == "cpu family") id.family = std::atoi(value.c_str());
        else if (key == "model") id.model = std::atoi(value.c_str());
        else if (key == "model name") id.model_name = value;
    }
    return id;
}

CpuTopology read_cpu_topology(const std::string& root) {
    CpuTopology topo;
    int err = 0;
    for (const auto& name : list_dir(root, &err)) {
        if (name.size() < 4 || name.compare(0, 3, "cpu") != 0) continue;
        const std::string num = name.substr(3);
        if (num.find_first_not_of("0123456789") != std::string::npos) continue;
        const int cpu = std::atoi(num.c_str());
        auto pkg = read_small_file(root + "/" + name + "/topology/physical_package_id");
        if (!pkg) continue;  // offline CPUs have no topology directory
        auto core = read_small_file(root + "/" + name + "/topology/core_id");
        topo.package_cpus[std::atoi(pkg->c_str())].push_back(cpu);
        topo.core_of_cpu[cpu] = core ? std::atoi(core->c_str()) : cpu;
    }
    if (topo.package_cpus.empty()) {
        topo.package_cpus[0] = {0};
        topo.core_of_cpu[0] = 0;
        topo.assumed = true;
    }
    return topo;
}

}  // namespace greenprobe
