/*
 * CHECK(cond) for the ctest executables: prints the failing condition and counts it in gFailures
 * (one counter per executable; main returns non-zero when it is not zero).
 */
#pragma once

#include <cstdio>

namespace
{
int gFailures = 0;
} // namespace

#define CHECK(cond)                                                                                                    \
    do                                                                                                                 \
    {                                                                                                                  \
        if (!(cond))                                                                                                   \
        {                                                                                                              \
            std::printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                                                \
            ++gFailures;                                                                                               \
        }                                                                                                              \
    } while (0)
