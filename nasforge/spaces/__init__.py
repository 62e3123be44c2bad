"""nasforge.spaces"""
