/*
 * Stand-ins for TensorRT's global plugin registry and logger, for the ctest executables and the
 * libnvinfer stub: the registry records registrations and, like TensorRT's, refuses a creator
 * whose name, version and namespace it already holds; the logger records warnings and errors.
 */
#pragma once

#include <NvInferRuntime.h>
#include <NvInferVersion.h>

#include <cstring>
#include <string>
#include <vector>

namespace dettool_test
{

class RecordingLogger : public nvinfer1::ILogger
{
public:
    void log(Severity severity, nvinfer1::AsciiChar const* msg) noexcept override
    {
        if (severity <= Severity::kWARNING)
        {
            messages.emplace_back(msg);
        }
    }
    std::vector<std::string> messages;
};

class RecordingRegistry : public nvinfer1::IPluginRegistry
{
public:
    using AsciiChar = nvinfer1::AsciiChar;
    using IPluginCreatorInterface = nvinfer1::IPluginCreatorInterface;

    std::vector<IPluginCreatorInterface*> creators;
    std::vector<std::string> namespaces;
    int32_t refused{0}; //!< registrations refused as duplicates

    bool registerCreator(IPluginCreatorInterface& creator, AsciiChar const* const pluginNamespace) noexcept override
    {
        auto& v3 = static_cast<nvinfer1::IPluginCreatorV3One&>(creator);
        if (getCreator(v3.getPluginName(), v3.getPluginVersion(), pluginNamespace) != nullptr)
        {
            ++refused;
            return false;
        }
        creators.push_back(&creator);
        namespaces.emplace_back(pluginNamespace);
        return true;
    }
    IPluginCreatorInterface* const* getAllCreators(int32_t* const numCreators) const noexcept override
    {
        *numCreators = static_cast<int32_t>(creators.size());
        return creators.data();
    }
    IPluginCreatorInterface* getCreator(AsciiChar const* const name, AsciiChar const* const version,
        AsciiChar const* const pluginNamespace) noexcept override
    {
        for (size_t i = 0; i < creators.size(); ++i)
        {
            auto* v3 = static_cast<nvinfer1::IPluginCreatorV3One*>(creators[i]);
            if (std::strcmp(v3->getPluginName(), name) == 0 && std::strcmp(v3->getPluginVersion(), version) == 0
                && namespaces[i] == pluginNamespace)
            {
                return creators[i];
            }
        }
        return nullptr;
    }
    bool deregisterCreator(IPluginCreatorInterface const&) noexcept override
    {
        return false;
    }
    void setErrorRecorder(nvinfer1::IErrorRecorder* const) noexcept override {}
    nvinfer1::IErrorRecorder* getErrorRecorder() const noexcept override
    {
        return nullptr;
    }
    bool isParentSearchEnabled() const override
    {
        return true;
    }
    void setParentSearchEnabled(bool const) override {}
    PluginLibraryHandle loadLibrary(AsciiChar const*) noexcept override
    {
        return nullptr;
    }
    void deregisterLibrary(PluginLibraryHandle) noexcept override {}
    nvinfer1::IPluginResource* acquirePluginResource(AsciiChar const*, nvinfer1::IPluginResource*) noexcept override
    {
        return nullptr;
    }
    int32_t releasePluginResource(AsciiChar const*) noexcept override
    {
        return 0;
    }
    // In TensorRT 10.16 and 11 (a harmless extra member where absent).
    IPluginCreatorInterface* const* getAllCreatorsRecursive(int32_t* const numCreators) noexcept
    {
        return getAllCreators(numCreators);
    }
#if NV_TENSORRT_MAJOR < 11
    // The deprecated IPluginV2 methods TensorRT 11 removed.
    bool registerCreator(nvinfer1::IPluginCreator&, AsciiChar const* const) noexcept override
    {
        return false;
    }
    nvinfer1::IPluginCreator* const* getPluginCreatorList(int32_t* const numCreators) const noexcept override
    {
        *numCreators = 0;
        return nullptr;
    }
    nvinfer1::IPluginCreator* getPluginCreator(AsciiChar const* const, AsciiChar const* const, AsciiChar const* const) noexcept override
    {
        return nullptr;
    }
    bool deregisterCreator(nvinfer1::IPluginCreator const&) noexcept override
    {
        return false;
    }
#endif
};

} // namespace dettool_test
