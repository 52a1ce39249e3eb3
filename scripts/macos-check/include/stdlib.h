/* Stand-in for the SDK header, for type-checking a macOS build on Linux only. */
#include <stddef.h>
void abort(void);
