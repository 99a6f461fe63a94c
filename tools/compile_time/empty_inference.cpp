// Compile-time probe: an empty program that includes the inference entry header.
#include <dynabert/inference.hpp>

int main() { return 0; }
