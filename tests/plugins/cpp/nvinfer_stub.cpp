/*
 * Test stand-in for libnvinfer, built as libnvinfer.so.10 (that soname): getPluginRegistry() and
 * getLogger() of a recording registry and logger, which libdettool_plugins.so must find by soname
 * even when the stub is loaded RTLD_LOCAL (as Python's `import tensorrt` loads libnvinfer).
 */
#include "recording_registry.h"

namespace
{
dettool_test::RecordingRegistry gRegistry;
dettool_test::RecordingLogger gLogger;
} // namespace

#define STUB_EXPORT extern "C" __attribute__((visibility("default")))

STUB_EXPORT nvinfer1::IPluginRegistry* getPluginRegistry() noexcept
{
    return &gRegistry;
}

STUB_EXPORT nvinfer1::ILogger* getLogger() noexcept
{
    return &gLogger;
}

//! For the test: what the stub's registry and logger received.
STUB_EXPORT dettool_test::RecordingRegistry* dettoolTestStubRegistry() noexcept
{
    return &gRegistry;
}

STUB_EXPORT dettool_test::RecordingLogger* dettoolTestStubLogger() noexcept
{
    return &gLogger;
}
