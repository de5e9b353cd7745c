/*
 * Shared plugin helpers: logging, the process's TensorRT registry, attribute parsing,
 * serialized fields.
 */
#include "common/plugin_utils.h"

#include <atomic>
#include <cstdio>
#include <cstring>
#include <dlfcn.h>
#include <sstream>
#include <stdexcept>

namespace dettool
{
namespace plugin
{
namespace
{

std::atomic<nvinfer1::ILoggerFinder*> gLoggerFinder{nullptr};

//! A symbol of the libnvinfer this process already loaded (never loads one), looked up anew on
//! every call: TensorRT may be loaded after this library, and a failed lookup must not stick.
//! libnvinfer itself first, by soname (this also finds one that Python's `import tensorrt` loaded
//! with RTLD_LOCAL), then the global scope (an application linked with a libnvinfer of another
//! name); the global scope alone could hand back an unrelated function of the same name, such as
//! another library's getLogger.
void* findNvinferSymbol(char const* symbol) noexcept
{
    for (char const* soname : {"libnvinfer.so.10", "libnvinfer.so.11"})
    {
        if (void* handle = dlopen(soname, RTLD_LAZY | RTLD_NOLOAD))
        {
            void* found = dlsym(handle, symbol);
            dlclose(handle); // only drops the reference RTLD_NOLOAD took; the library stays
            if (found)
            {
                return found;
            }
        }
    }
    return dlsym(RTLD_DEFAULT, symbol);
}

nvinfer1::ILogger* findLogger() noexcept
{
    if (nvinfer1::ILoggerFinder* finder = gLoggerFinder.load())
    {
        if (nvinfer1::ILogger* logger = finder->findLogger())
        {
            return logger;
        }
    }
    using GetLoggerFn = nvinfer1::ILogger* (*) ();
    auto const getLogger = reinterpret_cast<GetLoggerFn>(findNvinferSymbol("getLogger"));
    return getLogger ? getLogger() : nullptr;
}

void log(nvinfer1::ILogger::Severity severity, std::string const& message) noexcept
{
    std::string const text = "dettool plugins: " + message;
    if (nvinfer1::ILogger* logger = findLogger())
    {
        logger->log(severity, text.c_str());
    }
    else
    {
        std::fprintf(stderr, "%s\n", text.c_str());
    }
}

bool isInteger(nvinfer1::PluginFieldType type)
{
    using T = nvinfer1::PluginFieldType;
    return type == T::kINT32 || type == T::kINT64 || type == T::kINT16 || type == T::kINT8;
}

int64_t integerAt(nvinfer1::PluginField const& field, int32_t i)
{
    using T = nvinfer1::PluginFieldType;
    switch (field.type)
    {
    case T::kINT32: return static_cast<int32_t const*>(field.data)[i];
    case T::kINT64: return static_cast<int64_t const*>(field.data)[i];
    case T::kINT16: return static_cast<int16_t const*>(field.data)[i];
    case T::kINT8: return static_cast<int8_t const*>(field.data)[i];
    default: throw std::invalid_argument("not an integer field");
    }
}

} // namespace

void logError(std::string const& message) noexcept
{
    log(nvinfer1::ILogger::Severity::kERROR, message);
}

void logWarning(std::string const& message) noexcept
{
    log(nvinfer1::ILogger::Severity::kWARNING, message);
}

void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept
{
    gLoggerFinder.store(finder);
}

GetPluginRegistryFn findGetPluginRegistry() noexcept
{
    return reinterpret_cast<GetPluginRegistryFn>(findNvinferSymbol("getPluginRegistry"));
}

std::optional<Precision> precisionOf(nvinfer1::DataType type) noexcept
{
    switch (type)
    {
    case nvinfer1::DataType::kFLOAT: return Precision::kFLOAT32;
    case nvinfer1::DataType::kHALF: return Precision::kFLOAT16;
    default: return std::nullopt;
    }
}

Attributes::Attributes(nvinfer1::PluginFieldCollection const* fields)
    : mFields(fields)
{
    if (fields == nullptr || (fields->nbFields > 0 && fields->fields == nullptr))
    {
        throw std::invalid_argument("no attributes given");
    }
}

nvinfer1::PluginField const* Attributes::find(char const* name) const
{
    for (int32_t i = 0; i < mFields->nbFields; ++i)
    {
        nvinfer1::PluginField const& field = mFields->fields[i];
        if (field.name != nullptr && std::strcmp(field.name, name) == 0)
        {
            if (field.data == nullptr || field.length < 0)
            {
                throw std::invalid_argument(std::string("attribute ") + name + " has no data");
            }
            return &field;
        }
    }
    throw std::invalid_argument(std::string("missing attribute ") + name);
}

std::vector<int32_t> Attributes::requireInts(char const* name, int32_t count) const
{
    nvinfer1::PluginField const& field = *find(name);
    if (!isInteger(field.type))
    {
        throw std::invalid_argument(std::string("attribute ") + name + " must hold integers");
    }
    if (count >= 0 && field.length != count)
    {
        throw std::invalid_argument(std::string("attribute ") + name + " must hold " + std::to_string(count)
            + " values, not " + std::to_string(field.length));
    }
    std::vector<int32_t> values;
    for (int32_t i = 0; i < field.length; ++i)
    {
        int64_t const v = integerAt(field, i);
        if (v < INT32_MIN || v > INT32_MAX)
        {
            throw std::invalid_argument(std::string("attribute ") + name + " is out of the int32 range");
        }
        values.push_back(static_cast<int32_t>(v));
    }
    return values;
}

int32_t Attributes::requireInt(char const* name) const
{
    return requireInts(name, 1)[0];
}

float Attributes::requireFloat(char const* name) const
{
    nvinfer1::PluginField const& field = *find(name);
    if (field.length != 1)
    {
        throw std::invalid_argument(std::string("attribute ") + name + " must hold one value");
    }
    switch (field.type)
    {
    case nvinfer1::PluginFieldType::kFLOAT32: return *static_cast<float const*>(field.data);
    case nvinfer1::PluginFieldType::kFLOAT64: return static_cast<float>(*static_cast<double const*>(field.data));
    case nvinfer1::PluginFieldType::kFLOAT16: return halfBitsToFloat(*static_cast<uint16_t const*>(field.data));
    default: throw std::invalid_argument(std::string("attribute ") + name + " must be a float");
    }
}

float Attributes::optionalFloat(char const* name, float fallback) const
{
    return has(name) ? requireFloat(name) : fallback;
}

bool Attributes::has(char const* name) const
{
    for (int32_t i = 0; i < mFields->nbFields; ++i)
    {
        char const* fieldName = mFields->fields[i].name;
        if (fieldName != nullptr && std::strcmp(fieldName, name) == 0)
        {
            return true;
        }
    }
    return false;
}

void SerializedFields::clear()
{
    mFields.clear();
}

void SerializedFields::addInts(char const* name, int32_t const* values, int32_t count)
{
    mFields.emplace_back(name, values, nvinfer1::PluginFieldType::kINT32, count);
}

void SerializedFields::addFloat(char const* name, float const* value)
{
    mFields.emplace_back(name, value, nvinfer1::PluginFieldType::kFLOAT32, 1);
}

nvinfer1::PluginFieldCollection const* SerializedFields::collection()
{
    mCollection.nbFields = static_cast<int32_t>(mFields.size());
    mCollection.fields = mFields.data();
    return &mCollection;
}

FieldNames::FieldNames(std::initializer_list<nvinfer1::PluginField> fields)
    : mFields(fields)
{
    mCollection.nbFields = static_cast<int32_t>(mFields.size());
    mCollection.fields = mFields.data();
}

nvinfer1::PluginFieldCollection const* FieldNames::collection() noexcept
{
    return &mCollection;
}

std::string toString(nvinfer1::Dims const& dims)
{
    std::ostringstream out;
    out << "[";
    for (int32_t i = 0; i < dims.nbDims; ++i)
    {
        out << (i ? ", " : "") << dims.d[i];
    }
    out << "]";
    return out.str();
}

} // namespace plugin
} // namespace dettool
