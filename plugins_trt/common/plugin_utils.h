/*
 * What the four IPluginV3 plugins share: their identity (namespace "dettool", version "1"), the
 * boilerplate of IPluginV3 / IPluginCreatorV3One, attribute parsing from a PluginFieldCollection,
 * the fields they serialize, and error logging.
 *
 * Written against TensorRT 10.x's IPluginV3 API (NvInferRuntime.h, NvInferPluginBase.h), which
 * TensorRT 11 keeps.
 */
#pragma once

#include "common/precision.h"

#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace dettool
{
namespace plugin
{

constexpr char const* kPluginNamespace = "dettool";
constexpr char const* kPluginVersion = "1";

//! Log through TensorRT's logger (the finder's, else libnvinfer's getLogger(), looked up like
//! findGetPluginRegistry on every call), else stderr.
void logError(std::string const& message) noexcept;
void logWarning(std::string const& message) noexcept;

//! The logger finder TensorRT hands to plugin libraries of version-compatible engines.
void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;

//! libnvinfer's getPluginRegistry(), looked up in the process on every call (nullptr when TensorRT
//! is not loaded yet): libnvinfer.so.10 / .so.11 first, then the global scope. The library binds
//! to whatever TensorRT 10 or 11 the application loaded.
using GetPluginRegistryFn = nvinfer1::IPluginRegistry* (*) ();
GetPluginRegistryFn findGetPluginRegistry() noexcept;

//! Float16 or float32 tensors; nullopt for other types.
std::optional<Precision> precisionOf(nvinfer1::DataType type) noexcept;

//! The attributes of a node as the ONNX parser passes them (INT -> kINT32, INTS -> kINT32 array,
//! FLOAT -> kFLOAT32, STRING -> kCHAR), or as getFieldsToSerialize wrote them. 64-bit and
//! narrower integer and float fields are accepted too. Fields not asked for, such as the parser's
//! plugin_namespace and plugin_version, are ignored.
class Attributes
{
public:
    explicit Attributes(nvinfer1::PluginFieldCollection const* fields);

    //! The integer attribute `name`, which must exist and hold one value.
    int32_t requireInt(char const* name) const;

    //! The integers of `name`, which must exist and hold `count` values (any number if count < 0).
    std::vector<int32_t> requireInts(char const* name, int32_t count) const;

    //! The float attribute `name`, which must exist and hold one value.
    float requireFloat(char const* name) const;

    //! The float attribute `name` (one value) if it is given, else `fallback`: an attribute added to
    //! a plugin after its first version, whose default reproduces that version.
    float optionalFloat(char const* name, float fallback) const;

    //! Whether attribute `name` is given.
    bool has(char const* name) const;

private:
    nvinfer1::PluginField const* find(char const* name) const;

    nvinfer1::PluginFieldCollection const* mFields;
};

//! The fields a plugin serializes: TensorRT passes them back to createPlugin at runtime.
class SerializedFields
{
public:
    void clear();
    void addInts(char const* name, int32_t const* values, int32_t count);
    void addFloat(char const* name, float const* value);
    nvinfer1::PluginFieldCollection const* collection();

private:
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mCollection{};
};

//! The attribute list of a creator (getFieldNames): names, types and lengths (-1: any), no data.
class FieldNames
{
public:
    FieldNames(std::initializer_list<nvinfer1::PluginField> fields);
    nvinfer1::PluginFieldCollection const* collection() noexcept;

private:
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mCollection{};
};

//! IPluginV3 with the core, build and runtime capabilities in one object, as TensorRT's own
//! plugins do. Derived supplies kNAME and the build / runtime methods.
template <typename Derived>
class PluginV3Base : public nvinfer1::IPluginV3,
                     public nvinfer1::IPluginV3OneCore,
                     public nvinfer1::IPluginV3OneBuild,
                     public nvinfer1::IPluginV3OneRuntime
{
public:
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override
    {
        switch (type)
        {
        case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
        case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
        case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
        }
        return nullptr;
    }

    nvinfer1::IPluginV3* clone() noexcept override
    {
        try
        {
            return new Derived(static_cast<Derived const&>(*this));
        }
        catch (std::exception const& e)
        {
            logError(std::string(Derived::kNAME) + ": clone failed: " + e.what());
        }
        return nullptr;
    }

    char const* getPluginName() const noexcept override
    {
        return Derived::kNAME;
    }

    char const* getPluginVersion() const noexcept override
    {
        return kPluginVersion;
    }

    char const* getPluginNamespace() const noexcept override
    {
        return kPluginNamespace;
    }

    //! The plugins hold no per-context resources: a clone is all a context needs.
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept override
    {
        return clone();
    }

protected:
    //! The status TensorRT expects from onShapeChange / enqueue: 0 when `error` is empty, else the
    //! error logged as "<kNAME>: <error>" and -1.
    static int32_t report(std::string const& error) noexcept
    {
        if (error.empty())
        {
            return 0;
        }
        logError(std::string(Derived::kNAME) + ": " + error);
        return -1;
    }

    //! report() of a kernel launch: 0 on cudaSuccess, else "kernel launch failed: <CUDA's message>".
    static int32_t reportLaunch(cudaError_t status) noexcept
    {
        return report(status == cudaSuccess ? std::string() : std::string("kernel launch failed: ")
                + cudaGetErrorString(status));
    }
};

//! IPluginCreatorV3One of Plugin, which supplies kNAME, fieldNames() and
//! `static Plugin* create(nvinfer1::PluginFieldCollection const*)` (throwing on bad attributes).
template <typename Plugin>
class PluginCreator : public nvinfer1::IPluginCreatorV3One
{
public:
    nvinfer1::IPluginV3* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc,
        nvinfer1::TensorRTPhase /*phase*/) noexcept override
    {
        try
        {
            return Plugin::create(fc);
        }
        catch (std::exception const& e)
        {
            logError(std::string(Plugin::kNAME) + " '" + (name ? name : "") + "': " + e.what());
        }
        return nullptr;
    }

    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override
    {
        return Plugin::fieldNames().collection();
    }

    char const* getPluginName() const noexcept override
    {
        return Plugin::kNAME;
    }

    char const* getPluginVersion() const noexcept override
    {
        return kPluginVersion;
    }

    char const* getPluginNamespace() const noexcept override
    {
        return kPluginNamespace;
    }
};

//! "[d0, d1, ...]" for error messages.
std::string toString(nvinfer1::Dims const& dims);

} // namespace plugin
} // namespace dettool
