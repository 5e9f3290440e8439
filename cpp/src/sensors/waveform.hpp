// Power waveforms with closed-form integrals: the exact truth behind the synthetic sensor.
// tests/python/truth.py implements the same formulas independently.
#pragma once

#include <algorithm>
#include <cmath>
#include <string>

#include "greenprobe/options.hpp"

namespace greenprobe {

struct Waveform {
    enum class Shape { Constant, Sine, Square } shape = Shape::Sine;
    double base_w = 50.0;
    double amp_w = 20.0;
    double freq_hz = 1.0;
    double duty = 0.5;

    // Power at tau seconds after the origin.
    double power_w(double tau) const {
        switch (shape) {
            case Shape::Constant: return base_w;
            case Shape::Sine: return base_w + amp_w * std::sin(2.0 * M_PI * freq_hz * tau);
            case Shape::Square: {
                const double x = freq_hz * tau;
                return base_w + ((x - std::floor(x)) < duty ? amp_w : 0.0);
            }
        }
        return base_w;
    }

    // Energy from the origin to tau seconds (joules).
    double energy_j(double tau) const {
        switch (shape) {
            case Shape::Constant: return base_w * tau;
            case Shape::Sine: {
                const double w = 2.0 * M_PI * freq_hz;
                return base_w * tau + amp_w / w * (1.0 - std::cos(w * tau));
            }
            case Shape::Square: {
                const double x = freq_hz * tau;
                const double cycles = std::floor(x);
                const double frac = x - cycles;
                const double high_s = (cycles * duty + std::min(frac, duty)) / freq_hz;
                return base_w * tau + amp_w * high_s;
            }
        }
        return base_w * tau;
    }

    static Waveform from_options(const Options& o, const std::string& prefix) {
        Waveform w;
        const std::string shape = o.get(prefix + "waveform", "sine");
        if (shape == "constant") w.shape = Shape::Constant;
        else if (shape == "sine") w.shape = Shape::Sine;
        else if (shape == "square") w.shape = Shape::Square;
        else throw SensorError(ErrorCategory::Config, "unknown waveform '" + shape + "'",
                               "use waveform=constant, sine or square");
        w.base_w = o.get_double(prefix + "base_w", w.base_w);
        w.amp_w = o.get_double(prefix + "amp_w", w.amp_w);
        w.freq_hz = o.get_double(prefix + "freq_hz", w.freq_hz);
        w.duty = o.get_double(prefix + "duty", w.duty);
        if (w.freq_hz <= 0.0 || w.duty < 0.0 || w.duty > 1.0) {
            throw SensorError(ErrorCategory::Config, "waveform needs freq_hz > 0 and 0 <= duty <= 1",
                              "fix freq_hz / duty");
        }
        const double lowest = w.shape == Shape::Sine ? w.base_w - std::fabs(w.amp_w)
                              : w.shape == Shape::Square ? w.base_w + std::min(w.amp_w, 0.0)
                                                         : w.base_w;
        if (lowest < 0.0) {
            throw SensorError(ErrorCategory::Config, "waveform power would go negative",
                              "choose base_w and amp_w so that power stays >= 0");
        }
        return w;
    }
};

}  // namespace greenprobe
