"""Resolvers turn a URI the user typed (http(s)://, hf://, civitai://, browser URLs) into files to fetch."""
