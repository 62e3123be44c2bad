"""nasforge.run"""
