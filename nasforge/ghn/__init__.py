"""nasforge.ghn"""
