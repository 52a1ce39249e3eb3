/* Stand-in for the SDK header, for type-checking a macOS build on Linux only. */
#define assert(x) ((void)0)
#define static_assert _Static_assert
