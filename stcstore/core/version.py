"""The package's version, in the core so that every layer can stamp what it writes without importing the
package root (which imports the store and, lazily, the classifier)."""

__version__ = "0.3.0.dev0"
