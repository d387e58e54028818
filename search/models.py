# The search app owns no tables: it reads documents' tables and the vector store.
